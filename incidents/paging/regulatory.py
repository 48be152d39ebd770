"""Regulatory clocks: the data-breach and regulatory flags start a deadline of
their own (settings.REGULATORY_CLOCKS, e.g. 72 h to notify the authority). The
clock is shown beside the SLA clock, escalated to the Legal/Compliance contacts by
the escalation beat (a reminder before the deadline, at it, then every escalation
interval) and stops when a responder records the notification as done.

Exactly-once like the SLA's pages: the incident row is locked while deciding and
each Notification row is unique per (incident, contact, channel, reason), so two
beats (or a beat and a retry) send each step once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from .. import signals
from ..models import (
    EscalationContact,
    EscalationRole,
    EventKind,
    Incident,
    Notification,
    NotificationStatus,
    RegulatoryClock,
)
from ..rules import regulatory as rule
from ..services import IncidentError
from ..timeline import actor_name, append_event
from . import channels as notify
from . import outbox
from .oncall import person_for
from .outbox import absolute, create_row, restricted_line

REASON_PREFIX = "regulatory"


def clock_settings(flag: str) -> tuple[str, timedelta, timedelta] | None:
    """(obligation, within, warn before) for a flag that starts a clock, else None."""
    found = settings.REGULATORY_CLOCKS.get(flag)
    if not found:
        return None
    text, hours, warn_hours = found
    return str(text), timedelta(hours=float(hours)), timedelta(hours=float(warn_hours))


def snapshot(clock: RegulatoryClock) -> rule.Clock:
    return rule.Clock(
        flag=clock.flag,
        started_at=clock.started_at,
        deadline=clock.deadline,
        warn_before=clock.warn_before,
        done_at=clock.done_at,
        stopped_at=clock.stopped_at,
    )


def _when(value: datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M %Z}"


def start_clocks(incident: Incident, flags: Iterable[str], now: datetime) -> list[RegulatoryClock]:
    """Start (or restart, after the flag was cleared) the clock of each flag that has
    one, in the caller's transaction; each start is on the timeline."""
    started = []
    for flag in flags:
        config = clock_settings(flag)
        if config is None:
            continue
        obligation, within, warn = config
        clock = RegulatoryClock.objects.filter(incident=incident, flag=flag).first()
        if clock is not None and (clock.running or clock.done_at is not None):
            continue
        values = {
            "obligation": obligation,
            "started_at": now,
            "deadline": now + within,
            "warn_before": warn,
            "stopped_at": None,
        }
        if clock is None:
            clock = RegulatoryClock.objects.create(incident=incident, flag=flag, **values)
        else:
            for name, value in values.items():
                setattr(clock, name, value)
            clock.save()
        append_event(
            incident,
            EventKind.REGULATORY,
            f"Regulatory clock started ({flag.replace('_', ' ')}): {obligation} "
            f"by {_when(clock.deadline)}",
            data={"clock": clock.pk, "flag": flag, "deadline": clock.deadline.isoformat()},
            at=now,
        )
        started.append(clock)
    return started


def stop_clocks(incident: Incident, flags: Iterable[str], now: datetime) -> int:
    """The flag was cleared: its running clock stops, its pending pages are cancelled."""
    stopped = 0
    for clock in RegulatoryClock.objects.filter(
        incident=incident, flag__in=list(flags), done_at__isnull=True, stopped_at__isnull=True
    ):
        clock.stopped_at = now
        clock.save(update_fields=["stopped_at"])
        _cancel(incident, clock.flag, "flag cleared before sending")
        append_event(
            incident,
            EventKind.REGULATORY,
            f"Regulatory clock stopped ({clock.flag.replace('_', ' ')}): the flag was cleared",
            data={"clock": clock.pk, "flag": clock.flag, "stopped": True},
            at=now,
        )
        stopped += 1
    return stopped


def _cancel(incident: Incident, flag: str, why: str) -> int:
    return Notification.objects.filter(
        incident=incident,
        kind=Notification.REGULATORY,
        reason__startswith=f"{REASON_PREFIX}-{flag}-",
        status=NotificationStatus.PENDING,
    ).update(status=NotificationStatus.CANCELLED, last_error=why)


@receiver(signals.incident_declared, sender=Incident, dispatch_uid="regulatory-declared")
def _on_declared(incident: Incident, now: datetime, **_: Any) -> None:
    start_clocks(incident, incident.flags, now)


@receiver(signals.flags_changed, sender=Incident, dispatch_uid="regulatory-flags")
def _on_flags(incident: Incident, added: list[str], removed: list[str], **_: Any) -> None:
    now = timezone.now()
    stop_clocks(incident, removed, now)
    start_clocks(incident, added, now)


def record_notified(
    clock: RegulatoryClock, *, actor: AbstractBaseUser, note: str, now: datetime | None = None
) -> RegulatoryClock:
    """A responder records the notification as done (to whom, reference): the clock
    stops, its pending pages are cancelled, and it is on the timeline (audited).
    Refused when already recorded or when the flag was cleared."""
    note = " ".join(note.split())
    if not note:
        raise IncidentError("Say whom you notified and how (a reference number, an address).")
    if len(note) > 500:
        raise IncidentError("The note is longer than 500 characters.")
    now = now or timezone.now()
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=clock.incident_id)
        locked = RegulatoryClock.objects.select_for_update().get(pk=clock.pk)
        if locked.done_at is not None:
            raise IncidentError(
                f"Already recorded by {actor_name(locked.done_by)} at {_when(locked.done_at)}."
            )
        if locked.stopped_at is not None:
            raise IncidentError("This clock stopped when its flag was cleared.")
        locked.done_at, locked.done_by, locked.done_note = now, actor, note
        locked.save(update_fields=["done_at", "done_by", "done_note"])
        cancelled = _cancel(incident, locked.flag, "notification recorded as done")
        verdict = rule.verdict(snapshot(locked), now)
        timing = "on time" if verdict == rule.MET else f"late (deadline {_when(locked.deadline)})"
        append_event(
            incident,
            EventKind.REGULATORY,
            f"{actor_name(actor)} recorded: {locked.obligation} — done {timing}. {note}",
            actor=actor,
            data={
                "clock": locked.pk,
                "flag": locked.flag,
                "done": True,
                "verdict": verdict,
                "cancelled": cancelled,
            },
            at=now,
        )
    return locked


# --- escalation (from the escalation beat) ------------------------------------------------


def _text(incident: Incident, clock: RegulatoryClock, why: str) -> tuple[str, str]:
    link = absolute(incident.get_absolute_url())
    if incident.restricted:
        head = restricted_line(incident)
        subject = f"[{incident.severity.key}] Regulatory deadline: {head}"
    else:
        head = f"{incident.severity.key} incident #{incident.pk}: {incident.title}"
        subject = f"[{incident.severity.key}] Regulatory deadline on incident #{incident.pk}"
    text = (
        f"{why}.\n{head}\nDeadline: {_when(clock.deadline)}\n"
        f"Record it on the incident page once done: {link}"
    )
    return subject[:200], text


def escalate_clock(clock: RegulatoryClock, incident: Incident, now: datetime) -> list[int]:
    """Create the rows of every step due for this clock (the incident row is locked
    by the caller); one timeline event for what was created. Returns the ids to send."""
    steps = rule.steps_due(
        snapshot(clock),
        now,
        interval=timedelta(seconds=settings.ESCALATION_INTERVAL),
        max_steps=settings.ESCALATION_MAX_STEPS,
    )
    if not steps:
        return []
    contacts = list(
        EscalationContact.objects.filter(active=True, role=EscalationRole.LEGAL).select_related(
            "user"
        )
    )
    existing = set(
        incident.notifications.filter(kind=Notification.REGULATORY).values_list(
            "recipient_key", "reason"
        )
    )
    channels = notify.enabled_channels()
    created: list[Notification] = []
    for step in steps:
        reason = f"{REASON_PREFIX}-{clock.flag}-{step}"[:40]
        why = rule.why(step, clock.obligation, _when(clock.deadline))
        subject, text = _text(incident, clock, why)
        for contact in contacts:
            key = f"contact:{contact.pk}"
            if (key, reason) in existing:
                continue
            person = person_for(contact, now)
            for channel in channels:
                address = channel.address_for(person)
                row = create_row(
                    incident,
                    contact=contact,
                    recipient_key=key,
                    recipient=f"{contact.get_role_display()} {person.name}"[:160],
                    role=contact.role,
                    channel=channel.name,
                    address=address,
                    reason=reason,
                    why=why[:200],
                    kind=Notification.REGULATORY,
                    subject=subject,
                    text=text,
                    status=NotificationStatus.PENDING if address else NotificationStatus.NO_ADDRESS,
                    created_at=now,
                    due_at=now,
                )
                if row is not None:
                    created.append(row)
    if created:
        who = sorted({n.recipient for n in created})
        latest = steps[-1]
        append_event(
            incident,
            EventKind.ESCALATION,
            f"Regulatory deadline escalated to {', '.join(who)}: "
            f"{rule.why(latest, clock.obligation, _when(clock.deadline))}",
            data={
                "notifications": [n.pk for n in created],
                "reasons": sorted({n.reason for n in created}),
                "clock": clock.pk,
            },
            at=now,
        )
    return [n.pk for n in created if n.status == NotificationStatus.PENDING]


def escalate_due(now: datetime | None = None) -> list[int]:
    """Every running clock with a step due: its rows, under its incident's row lock."""
    now = now or timezone.now()
    ids: list[int] = []
    running = RegulatoryClock.objects.filter(
        done_at__isnull=True, stopped_at__isnull=True
    ).values_list("pk", "incident_id")
    for clock_pk, incident_pk in running:
        with transaction.atomic():
            incident = (
                Incident.objects.select_for_update().select_related("severity").get(pk=incident_pk)
            )
            clock = RegulatoryClock.objects.get(pk=clock_pk)
            if not clock.running:
                continue
            created = escalate_clock(clock, incident, now)
            outbox.enqueue(created)
            ids += created
    return ids
