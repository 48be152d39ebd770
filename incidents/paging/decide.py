"""Deciding who is told: turns the pure decisions of `rules.escalation` and
`rules.rota` into Notification rows (the outbox), for pages, the incident's
channel and status updates; the beat's escalation sweep.

Exactly-once: a row's unique key (incident, recipient, channel, reason) makes
creating it idempotent, and the incident row is locked while deciding, so two
beat processes page each person once."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..access import can_view
from ..models import (
    OPEN_STATUSES,
    EscalationContact,
    EventKind,
    Incident,
    Notification,
    NotificationStatus,
    Status,
    TimelineEvent,
)
from ..rules import escalation
from ..timeline import actor_name, append_event
from . import channels as notify
from . import outbox
from .oncall import person_for, user_for
from .outbox import absolute, channel_rows, create_row, restricted_line, told_contacts


def contact_rules() -> tuple[escalation.ContactRule, ...]:
    contacts = EscalationContact.objects.filter(active=True).prefetch_related("severities")
    return tuple(
        escalation.ContactRule(
            id=c.pk,
            role=c.role,
            level=c.level,
            always=c.always,
            severities=frozenset(s.key for s in c.severities.all()),
            categories=frozenset(c.categories or ()),
            flags=frozenset(c.flags or ()),
            extended_outage_after=c.extended_outage_after,
            in_chain=c.in_escalation_chain,
        )
        for c in contacts
    )


def snapshot(incident: Incident) -> escalation.IncidentSnapshot:
    return escalation.IncidentSnapshot(
        severity=incident.severity.key,
        category=incident.category,
        flags=frozenset(incident.flags),
        declared_at=incident.declared_at,
        response_deadline=incident.response_deadline,
        acknowledged=incident.acknowledged_at is not None or incident.status != Status.DECLARED,
        open=incident.status in OPEN_STATUSES,
    )


def escalation_interval(incident: Incident) -> timedelta:
    """Repeat at the severity's response time, but at least every ESCALATION_INTERVAL."""
    cap = timedelta(seconds=settings.ESCALATION_INTERVAL)
    return min(incident.severity.response_time, cap)


def _incident_text(incident: Incident) -> str:
    deadline = timezone.localtime(incident.response_deadline)
    if incident.restricted:
        return "\n".join(
            [
                restricted_line(incident),
                f"Status: {incident.get_status_display()}",
                f"Open: {absolute(incident.get_absolute_url())}",
            ]
        )
    lines = [
        f"{incident.severity.key} {incident.get_category_display().lower()} incident "
        f"#{incident.pk}: {incident.title}",
        f"Status: {incident.get_status_display()}"
        + (
            f" (acknowledge by {deadline:%Y-%m-%d %H:%M %Z})"
            if incident.status == Status.DECLARED
            else ""
        ),
        f"Channel: {incident.channel_name}",
    ]
    if incident.flags:
        lines.append("Flags: " + ", ".join(f.replace("_", " ") for f in incident.flags))
    if incident.summary:
        lines.append(incident.summary)
    lines.append(f"Open: {absolute(incident.get_absolute_url())}")
    return "\n".join(lines)


def _subject(incident: Incident) -> str:
    if incident.restricted:
        return f"[{incident.severity.key}] {restricted_line(incident)}"[:200]
    return f"[{incident.severity.key}] Incident #{incident.pk}: {incident.title}"[:200]


def page(incident: Incident, *, now: datetime | None = None) -> list[int]:
    """Create every page due for `incident` (locked by the caller's transaction) that
    does not exist yet; put one escalation event on the timeline. Returns the ids
    to deliver (enqueued on commit)."""
    now = now or timezone.now()
    contacts = {
        c.pk: c for c in EscalationContact.objects.filter(active=True).select_related("user")
    }
    existing = set(incident.notifications.values_list("recipient_key", "reason").distinct())
    told = frozenset(
        int(key.split(":")[1])
        for key in incident.notifications.filter(kind=Notification.PAGE).values_list(
            "recipient_key", flat=True
        )
    )
    decisions = escalation.who_to_tell(
        snapshot(incident),
        contact_rules(),
        now,
        interval=escalation_interval(incident),
        max_steps=settings.ESCALATION_MAX_STEPS,
        already_told=told,
    )
    channels = notify.enabled_channels()
    text = _incident_text(incident)
    created: list[Notification] = []
    for decision in decisions:
        contact = contacts.get(decision.contact)
        key = f"contact:{decision.contact}"
        if contact is None or (key, decision.reason) in existing:
            continue
        person = person_for(contact, now)
        label = _label(contact, person)
        withheld = _why_not_told(incident, contact, now) if incident.restricted else ""
        for channel in channels:
            address = channel.address_for(person)
            if withheld:
                status = NotificationStatus.WITHHELD
            else:
                status = NotificationStatus.PENDING if address else NotificationStatus.NO_ADDRESS
            row = create_row(
                incident,
                contact=contact,
                recipient_key=key,
                recipient=label[:160],
                role=contact.role,
                channel=channel.name,
                address=address,
                reason=decision.reason,
                why=decision.why[:200],
                kind=Notification.PAGE,
                subject=_subject(incident),
                text=f"You are told as {contact.get_role_display()} ({decision.why}).\n{text}",
                status=status,
                last_error=withheld,
                created_at=now,
                due_at=now,
            )
            if row is not None:
                created.append(row)
    if created:
        _record_decisions(incident, created, now)
    return [n.pk for n in created if n.status == NotificationStatus.PENDING]


def _why_not_told(incident: Incident, contact: EscalationContact, now: datetime) -> str:
    """Paging never grants access: a restricted incident is paged only to a LotoOps
    user who may already see it (superusers, holders of `view_restricted_incident`,
    users granted this incident). Why this contact's person may not be told, or ""."""
    user = user_for(contact, now)
    if user is None:
        return (
            "not told: no LotoOps user behind this contact, so nobody can tell they "
            "may see this restricted incident"
        )
    if not user.is_active or not can_view(user, incident):
        return (
            f"not told: {actor_name(user)} may not see this restricted incident "
            "(a superuser may grant it on the incident's Object permissions page)"
        )
    return ""


def _label(contact: EscalationContact, person: notify.Person) -> str:
    role = contact.get_role_display()
    return person.name if person.name.startswith(role) else f"{role} {person.name}"


def _record_decisions(incident: Incident, rows: list[Notification], now: datetime) -> None:
    by_person: dict[str, list[Notification]] = {}
    for row in rows:
        by_person.setdefault(f"{row.recipient} ({row.why})", []).append(row)
    parts = []
    for who, items in by_person.items():
        ways = [n.channel for n in items if n.status == NotificationStatus.PENDING]
        missing = [n.channel for n in items if n.status == NotificationStatus.NO_ADDRESS]
        withheld = next(
            (n.last_error for n in items if n.status == NotificationStatus.WITHHELD), ""
        )
        part = who + (f" by {', '.join(ways)}" if ways else "")
        if missing:
            part += f"; no address for {', '.join(missing)}"
        if withheld:
            part += f": {withheld}"
        parts.append(part)
    reasons = sorted({r.reason for r in rows})
    escalated = any(r.startswith("escalation-") for r in reasons)
    head = "Escalating: " if escalated else "Telling: "
    append_event(
        incident,
        EventKind.ESCALATION,
        head + "; ".join(parts),
        data={"notifications": [r.pk for r in rows], "reasons": reasons},
        at=now,
    )


def page_channel(incident: Incident, *, now: datetime | None = None) -> list[int]:
    """At declaration: open the incident's Slack channel with the initial status update."""
    now = now or timezone.now()
    if not notify.SlackChannel.enabled():
        return []
    row = create_row(
        incident,
        recipient_key="channel",
        recipient=incident.channel_name,
        channel="slack",
        address=incident.channel_name,
        reason="declared",
        why="start incident communication",
        kind=Notification.CHANNEL,
        subject=_subject(incident),
        text=f"Initial status update.\n{_incident_text(incident)}",
        created_at=now,
        due_at=now,
    )
    return [row.pk] if row is not None else []


def fan_out_update(incident: Incident, event: TimelineEvent) -> list[int]:
    """A status update goes to the incident's channel, the webhook and, by email, to
    every contact told of the incident so far."""
    now = event.created_at
    text = (
        f"Status update on incident #{incident.pk} by {actor_name(event.actor)}:\n"
        f"{event.message}\n\n"
        f"{_incident_text(incident)}"
    )
    state = f"{incident.severity.key} · {incident.get_status_display()}"
    subject = f"[{state}] Update: {incident.title}"
    if incident.restricted:  # the update itself stays in LotoOps
        text = (
            f"Status update on restricted incident #{incident.pk} by "
            f"{actor_name(event.actor)}: open LotoOps to read it.\n\n{_incident_text(incident)}"
        )
        subject = f"[{state}] Update on restricted incident #{incident.pk}"
    reason = f"update-{event.pk}"
    rows: list[Notification | None] = []
    common = {
        "reason": reason,
        "kind": Notification.UPDATE,
        "subject": subject[:200],
        "text": text,
        "created_at": now,
        "due_at": now,
        "why": "status update",
    }
    rows += channel_rows(incident, common)
    told = EscalationContact.objects.filter(pk__in=told_contacts(incident)).select_related("user")
    for contact in told:
        person = person_for(contact, now)
        if person.email:
            rows.append(
                create_row(
                    incident,
                    contact=contact,
                    recipient_key=f"contact:{contact.pk}",
                    recipient=_label(contact, person)[:160],
                    role=contact.role,
                    channel="email",
                    address=person.email,
                    **common,
                )
            )
    return [row.pk for row in rows if row is not None]


def escalate_due(now: datetime | None = None) -> list[int]:
    """Create every page now due for every open incident (each under its row lock)."""
    now = now or timezone.now()
    ids: list[int] = []
    for pk in Incident.objects.filter(status__in=OPEN_STATUSES).values_list("pk", flat=True):
        with transaction.atomic():
            incident = Incident.objects.select_for_update().select_related("severity").get(pk=pk)
            if incident.status not in OPEN_STATUSES:
                continue
            created = page(incident, now=now)
            outbox.enqueue(created)
            ids += created
    return ids
