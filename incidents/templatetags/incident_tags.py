from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.forms import BoundField
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from incidents.models import FLAG_LABELS, Category, Incident, RegulatoryClock, Status
from incidents.paging.regulatory import snapshot as regulatory_snapshot
from incidents.rules import regulatory as regulatory_rule
from incidents.rules import sla as sla_rule
from incidents.rules.markdown import markdown_html
from incidents.rules.text import format_duration

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else ""


@register.filter
def markdown(value: str) -> str:
    """What people wrote, as Markdown (CommonMark, line breaks kept), sanitised by nh3:
    no raw HTML, no images, only http(s) and mailto links."""
    return mark_safe(markdown_html(str(value)))  # noqa: S308  sanitised by nh3


@register.filter
def flag_label(value: str) -> str:
    """security → Security, data_breach → Data breach."""
    return FLAG_LABELS.get(value, value)


@register.filter
def category_label(value: str) -> str:
    """payment → Payment processing (reports' rows carry the key)."""
    return dict(Category.choices).get(value, value)


@register.filter
def status_label(value: str) -> str:
    return dict(Status.choices).get(value, value)


@register.filter
def age(value: datetime) -> str:
    return format_duration(timezone.now() - value)


@register.simple_tag
def sla(incident: Incident) -> str:
    """The SLA clock: a countdown until acknowledged (ticked live by app.js via
    data-deadline), then met or breached. Built in Python: it is on every row."""
    now = timezone.now()
    acked = incident.acknowledged_at
    breached = sla_rule.verdict(acked, incident.response_deadline, now) == sla_rule.BREACHED
    classes = "sla" + (" breached" if breached else "") + (" done" if acked else "")
    if acked:
        # On a phone the dashboard drops the words between the verdict and the time
        # ("SLA met 0s"): the column then fits 390 px; the incident page says it all.
        text = format_html(
            '{}<span class="sla-words">: acknowledged after</span> {}',
            "SLA breached" if breached else "SLA met",
            format_duration(acked - incident.declared_at),
        )
    else:
        remaining = incident.response_deadline - now
        if remaining.total_seconds() < 0:
            text = f"SLA breached {format_duration(remaining)} ago"
        else:
            text = f"{format_duration(remaining)} left to acknowledge"
    deadline = incident.response_deadline
    # The browser only counts down from the server's number (no clock or rule of its own).
    left = f"{(deadline - now).total_seconds():.0f}"
    return format_html(
        '<span class="{}"{} title="Response deadline {}">{}</span>',
        classes,
        format_html(' data-seconds-left="{}"', left) if not acked else "",
        timezone.localtime(deadline).strftime("%Y-%m-%d %H:%M:%S %Z"),
        text,
    )


@register.simple_tag
def open_incident_row(incident: Incident) -> str:
    """One row of the dashboard's open incidents, built in Python: the dashboard
    shows up to 200 of them and refreshes every 20 s in every open browser."""
    url = incident.get_absolute_url()
    severity = incident.severity.key
    restricted = mark_safe(' <span class="tag">restricted</span>') if incident.restricted else ""
    commander = incident.commander.get_username() if incident.commander else "—"
    return format_html(
        '<tr class="{}"><td><a href="{}">{}</a></td>'
        '<td><span class="sev sev-{}">{}</span></td>'
        '<td><a href="{}">{}</a>{}</td><td>{}</td>'
        '<td><span class="status status-{}">{}</span></td>'
        "<td>{}</td><td>{}</td><td>{}</td></tr>",
        "breached-row" if incident.sla_breached() else "",
        url,
        incident.pk,
        severity.lower(),
        severity,
        url,
        incident.title,
        restricted,
        incident.get_category_display(),
        incident.status,
        incident.get_status_display(),
        age(incident.declared_at),
        sla(incident),
        commander,
    )


@register.simple_tag
def resolved_incident_row(incident: Incident) -> str:
    """One row of the dashboard's recently resolved incidents (see open_incident_row)."""
    url = incident.get_absolute_url()
    severity = incident.severity.key
    resolved = timezone.localtime(incident.resolved_at).strftime("%Y-%m-%d %H:%M %Z")
    return format_html(
        '<tr><td><a href="{}">{}</a></td><td><span class="sev sev-{}">{}</span></td>'
        '<td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
        url,
        incident.pk,
        severity.lower(),
        severity,
        url,
        incident.title,
        incident.get_status_display(),
        resolved,
        sla(incident),
    )


@register.simple_tag
def select(field: BoundField) -> str:
    """A <select> for a choice field, built in Python: Django's widget templates
    render one template per option, a few ms for a handful of small filters."""
    current = "" if field.value() is None else str(field.value())
    options = format_html_join(
        "",
        '<option value="{}"{}>{}</option>',
        (
            (value, " selected" if str(value) == current else "", label)
            for value, label in field.field.choices
        ),
    )
    return format_html(
        '<select name="{}" id="{}">{}</select>', field.html_name, field.id_for_label, options
    )


@register.simple_tag
def regulatory_clocks(incident: Incident) -> list[dict[str, object]]:
    """The incident's regulatory clocks as the header shows them beside the SLA clock:
    the server's seconds left (app.js only counts down from it) and the verdict
    (rules/regulatory.py)."""
    now = timezone.now()
    out: list[dict[str, object]] = []
    for clock in RegulatoryClock.objects.filter(incident=incident).select_related("done_by"):
        snap = regulatory_snapshot(clock)
        verdict = regulatory_rule.verdict(snap, now)
        left = regulatory_rule.seconds_left(snap, now)
        if verdict == regulatory_rule.PENDING:
            text = f"{format_duration(timedelta(seconds=left))} left: {clock.obligation}"
        elif verdict == regulatory_rule.OVERDUE:
            text = f"{clock.obligation}: overdue by {format_duration(timedelta(seconds=-left))}"
        elif verdict == regulatory_rule.STOPPED:
            text = f"{clock.obligation}: stopped (flag cleared)"
        else:
            who = clock.done_by.get_username() if clock.done_by else "someone"
            when = timezone.localtime(clock.done_at).strftime("%Y-%m-%d %H:%M")
            timing = "on time" if verdict == regulatory_rule.MET else "late"
            text = f"{clock.obligation}: done {timing} ({who}, {when})"
        out.append(
            {
                "clock": clock,
                "verdict": verdict,
                "running": clock.running,
                "seconds_left": left,
                "text": text,
                "deadline": timezone.localtime(clock.deadline).strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
        )
    return out
