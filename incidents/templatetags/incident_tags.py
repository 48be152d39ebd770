from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone

from incidents.formatting import format_duration
from incidents.models import Incident

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else ""


@register.filter
def age(value: datetime) -> str:
    return format_duration(timezone.now() - value)


@register.inclusion_tag("partials/sla.html")
def sla(incident: Incident) -> dict[str, object]:
    """The SLA clock: a countdown until acknowledged, then met or breached."""
    now = timezone.now()
    acked = incident.acknowledged_at
    remaining = incident.response_deadline - now
    return {
        "incident": incident,
        "acknowledged": acked is not None,
        "breached": incident.sla_breached(now),
        "remaining": format_duration(remaining),
        "overdue": remaining.total_seconds() < 0,
        "took": format_duration(acked - incident.declared_at) if acked else "",
        "deadline_iso": incident.response_deadline.isoformat(),
    }
