"""Default alert rules (idempotent: what is there, edited or not, is left alone)."""

from __future__ import annotations

from django.db import transaction

from diagnostics.models import Runbook
from incidents.models import Category, Severity

from .models import AutoRun, CategoryRule, SeverityRule

# Prometheus' conventional `severity` label values. Info alerts only join.
SEVERITY_RULES = (
    ("critical", "P0", True),
    ("page", "P1", True),
    ("high", "P1", True),
    ("error", "P1", True),
    ("warning", "P2", True),
    ("info", "P3", False),
)
# A `category` label naming ours wins; then what the `service` label says.
SERVICE_CATEGORIES = (
    ("postgres", Category.DATABASE),
    ("postgresql", Category.DATABASE),
    ("stripe", Category.PAYMENT),
    ("payments", Category.PAYMENT),
    ("banca", Category.BANCA),
    ("lotolink-backend", Category.SERVICE_OUTAGE),
)


@transaction.atomic
def seed_alerts() -> dict[str, int]:
    created = {"severity rules": 0, "category rules": 0, "auto-runs": 0}
    if not SeverityRule.objects.exists():
        by_key = {s.key: s for s in Severity.objects.all()}
        for order, (value, key, declares) in enumerate(SEVERITY_RULES):
            if key in by_key:
                SeverityRule.objects.create(
                    order=order, value=value, severity=by_key[key], may_declare=declares
                )
                created["severity rules"] += 1
    if not CategoryRule.objects.exists():
        rules = [({"category": c.value}, c.value) for c in Category]
        rules += [({"service": service}, category) for service, category in SERVICE_CATEGORIES]
        for order, (matchers, category) in enumerate(rules):
            CategoryRule.objects.create(order=order, matchers=matchers, category=category)
            created["category rules"] += 1
    if not AutoRun.objects.exists():
        for book in Runbook.objects.exclude(categories=[]):
            for category in book.categories:
                AutoRun.objects.get_or_create(category=category, runbook=book)
                created["auto-runs"] += 1
    return created
