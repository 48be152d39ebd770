"""Which severity and category an alert's labels map to (the rules are data in admin)."""

from __future__ import annotations

from dataclasses import dataclass

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


class Router:
    """The rules, loaded once per delivery."""

    def __init__(self) -> None:
        self.severities = list(SeverityRule.objects.select_related("severity"))
        self.categories = list(CategoryRule.objects.all())

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
