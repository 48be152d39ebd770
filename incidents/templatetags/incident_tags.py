from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from incidents.formatting import format_duration
from incidents.models import Incident

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else ""


@register.filter
def age(value: datetime) -> str:
    return format_duration(timezone.now() - value)


@register.simple_tag
def sla(incident: Incident) -> str:
    """The SLA clock: a countdown until acknowledged (ticked live by app.js via
    data-deadline), then met or breached. Built in Python: it is on every row."""
    now = timezone.now()
    acked = incident.acknowledged_at
    breached = incident.sla_breached(now)
    classes = "sla" + (" breached" if breached else "") + (" done" if acked else "")
    if acked:
        verdict = "SLA breached" if breached else "SLA met"
        text = f"{verdict}: acknowledged after {format_duration(acked - incident.declared_at)}"
    else:
        remaining = incident.response_deadline - now
        if remaining.total_seconds() < 0:
            text = f"SLA breached {format_duration(remaining)} ago"
        else:
            text = f"{format_duration(remaining)} left to acknowledge"
    deadline = incident.response_deadline
    return format_html(
        '<span class="{}"{} title="Response deadline {}">{}</span>',
        classes,
        format_html(' data-deadline="{}"', deadline.isoformat()) if not acked else "",
        timezone.localtime(deadline).strftime("%Y-%m-%d %H:%M:%S %Z"),
        text,
    )
