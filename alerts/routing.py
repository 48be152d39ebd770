"""Which severity and category an alert's labels map to (the rules are data in admin)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from incidents.models import Severity

from .models import CategoryRule, SeverityRule


class UnknownAlert(ValueError):
    """No rule maps these labels; nothing was written."""


@dataclass(frozen=True)
class Route:
    severity: Severity
    category: str
    may_declare: bool
    mitigate_on_resolve: bool


# How long a process keeps the rules it read (two queries a delivery otherwise). A
# change in the admin clears them in its own process at once (`forget_rules`, on every
# save and delete of a rule or a severity) and reaches the others within this time.
RULES_TTL = 1.0
_rules: tuple[float, list[SeverityRule], list[CategoryRule]] | None = None
_rules_lock = threading.Lock()


def _load_rules() -> tuple[list[SeverityRule], list[CategoryRule]]:
    global _rules
    now = time.monotonic()
    cached = _rules
    if cached is not None and now - cached[0] < RULES_TTL:
        return cached[1], cached[2]
    with _rules_lock:
        severities = list(SeverityRule.objects.select_related("severity"))
        categories = list(CategoryRule.objects.all())
        _rules = (now, severities, categories)
    return severities, categories


def forget_rules(**_: Any) -> None:
    """Read the rules afresh at the next delivery (a rule or a severity changed)."""
    global _rules
    _rules = None


class Router:
    """The rules, as this process last read them (at most RULES_TTL s ago)."""

    def __init__(self) -> None:
        self.severities, self.categories = _load_rules()

    def route(self, labels: dict[str, str]) -> Route:
        severity = next((r for r in self.severities if labels.get(r.label) == r.value), None)
        category = next((r for r in self.categories if r.matches(labels)), None)
        missing = [
            what for what, rule in (("severity", severity), ("category", category)) if rule is None
        ]
        if severity is None or category is None:
            name = labels.get("alertname", "unnamed alert")
            raise UnknownAlert(
                f"No {' or '.join(missing)} rule matches alert {name!r} "
                f"(labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}): "
                "add one in the admin (Alerts › severity rules / category rules)."
            )
        return Route(
            severity=severity.severity,
            category=category.category,
            may_declare=severity.may_declare and category.may_declare,
            mitigate_on_resolve=category.mitigate_on_resolve,
        )
