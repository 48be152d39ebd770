"""Paging, recorded: turns the pure decisions of `escalation` and `rota` into
Notification rows, delivers one row through its channel, and records every
outcome on the incident's timeline.

Exactly-once: a row's unique key (incident, recipient, channel, reason) makes
creating it idempotent, and the incident row is locked while deciding, so two
beat processes page each person once; a row is claimed with a conditional
UPDATE (pending -> sending) before it is sent, so two deliveries of the same
task send once. A row whose worker died while sending (claimed longer ago than
NOTIFY_SEND_LEASE) is sent again: a page may then, rarely, arrive twice, but a
due page is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from . import escalation, notify, rota
from .models import (
    OPEN_STATUSES,
    EscalationContact,
    EscalationRole,
    EventKind,
    Incident,
    Notification,
    NotificationStatus,
    Rotation,
    RotationMember,
    Status,
    TimelineEvent,
)

log = logging.getLogger(__name__)

ACK_SALT = "incidents.ack-link"
RETRY_BACKOFF = (10, 60, 300)  # seconds before attempts 2, 3 and 4


# --- snapshots for the pure functions ---------------------------------------------------


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


# --- the rota ------------------------------------------------------------------------------


def rotation_spec(rotation: Rotation) -> tuple[rota.RotationSpec, tuple[rota.OverrideSpec, ...]]:
    members = tuple(m.pk for m in rotation.members.all())
    spec = rota.RotationSpec(
        rotation.time_zone, rotation.start_date, rotation.handoff_time, rotation.shift_days, members
    )
    overrides = tuple(
        rota.OverrideSpec(o.member_id, o.starts_at, o.ends_at)
        for o in rotation.overrides.order_by("pk")
    )
    return spec, overrides


def on_call(
    role: str = EscalationRole.ON_CALL, at: datetime | None = None
) -> tuple[RotationMember | None, RotationMember | None, rota.Shift | None, rota.Shift | None]:
    """Who holds `role` now and next (from the first active rotation of that role)."""
    at = at or timezone.now()
    rotation = Rotation.objects.filter(active=True, role=role).prefetch_related("members").first()
    if rotation is None:
        return None, None, None, None
    spec, overrides = rotation_spec(rotation)
    now_shift, next_shift = rota.now_and_next(spec, overrides, at)
    members = {m.pk: m for m in rotation.members.all()}
    return (
        members.get(now_shift.member) if now_shift else None,
        members.get(next_shift.member) if next_shift else None,
        now_shift,
        next_shift,
    )


def person_for(contact: EscalationContact, at: datetime) -> notify.Person:
    """The person behind a contact: whoever the rota puts on call for its role, else
    the contact's own details (the user's email when the contact has none)."""
    member = on_call(contact.role, at)[0]
    if member is not None:
        email = member.email or (member.user.email if member.user else "")
        return notify.Person(member.name, email, member.slack_handle, member.phone)
    email = contact.email or (contact.user.email if contact.user else "")
    return notify.Person(contact.name, email, contact.slack_handle, contact.phone)


# --- deciding and recording who is told -------------------------------------------------


def _incident_text(incident: Incident) -> str:
    deadline = timezone.localtime(incident.response_deadline)
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


def absolute(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def _subject(incident: Incident) -> str:
    return f"[{incident.severity.key}] Incident #{incident.pk}: {incident.title}"[:200]


def _create(incident: Incident, **fields: object) -> Notification | None:
    """Create one row unless its key exists (a concurrent run made it first)."""
    try:
        with transaction.atomic():
            return Notification.objects.create(incident=incident, **fields)
    except IntegrityError:
        return None


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
        for channel in channels:
            address = channel.address_for(person)
            row = _create(
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
                status=NotificationStatus.PENDING if address else NotificationStatus.NO_ADDRESS,
                created_at=now,
                due_at=now,
            )
            if row is not None:
                created.append(row)
    if created:
        _record_decisions(incident, created, now)
    return [n.pk for n in created if n.status == NotificationStatus.PENDING]


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
        part = who + (f" by {', '.join(ways)}" if ways else "")
        if missing:
            part += f"; no address for {', '.join(missing)}"
        parts.append(part)
    reasons = sorted({r.reason for r in rows})
    escalated = any(r.startswith("escalation-") for r in reasons)
    head = "Escalating: " if escalated else "Telling: "
    _event(
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
    row = _create(
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


def _told_contacts(incident: Incident) -> set[int]:
    return set(
        incident.notifications.filter(kind=Notification.PAGE).values_list("contact_id", flat=True)
    )


def fan_out_update(incident: Incident, event: TimelineEvent) -> list[int]:
    """A status update goes to the incident's channel, the webhook and, by email, to
    every contact told of the incident so far."""
    now = event.created_at
    text = (
        f"Status update on incident #{incident.pk} by {_name(event.actor)}:\n{event.message}\n\n"
        f"{_incident_text(incident)}"
    )
    state = f"{incident.severity.key} · {incident.get_status_display()}"
    subject = f"[{state}] Update: {incident.title}"
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
    if notify.SlackChannel.enabled():
        rows.append(
            _create(
                incident,
                recipient_key="channel",
                recipient=incident.channel_name,
                channel="slack",
                address=incident.channel_name,
                **common,
            )
        )
    if notify.WebhookChannel.enabled():
        rows.append(
            _create(
                incident,
                recipient_key="channel",
                recipient="stakeholders",
                channel="webhook",
                address="webhook",
                **common,
            )
        )
    told = EscalationContact.objects.filter(pk__in=_told_contacts(incident)).select_related("user")
    for contact in told:
        person = person_for(contact, now)
        if person.email:
            rows.append(
                _create(
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


def cancel_pending(incident: Incident) -> int:
    """Acknowledged: no page still waiting goes out (status updates still do)."""
    return Notification.objects.filter(
        incident=incident, kind=Notification.PAGE, status=NotificationStatus.PENDING
    ).update(status=NotificationStatus.CANCELLED, last_error="acknowledged before sending")


def enqueue(ids: Iterable[int], queue: str | None = None) -> None:
    """Send delivery tasks once the rows are committed (to `queue`: the queue of the
    task that made them, else the default). A broker that is down costs only time:
    the beat sweep (`requeue_stale`) sends them again."""
    ids = list(ids)
    if not ids:
        return

    def send() -> None:
        from .tasks import deliver_notification

        for pk in ids:
            try:
                deliver_notification.apply_async((pk,), queue=queue)
            except Exception as exc:  # the broker: never fail the incident's workflow
                log.warning("could not enqueue notification %s: %s", pk, type(exc).__name__)

    transaction.on_commit(send)


# --- delivering one row -----------------------------------------------------------------


def claim(notification_id: int, now: datetime) -> bool:
    return bool(
        Notification.objects.filter(
            pk=notification_id, status=NotificationStatus.PENDING, due_at__lte=now
        ).update(
            status=NotificationStatus.SENDING,
            claimed_at=now,
            attempts=F("attempts") + 1,
        )
    )


def ack_token(notification: Notification) -> str:
    return signing.dumps({"i": notification.incident_id, "n": notification.pk}, salt=ACK_SALT)


def read_ack_token(token: str) -> tuple[int, int]:
    """(incident id, notification id); raises signing.SignatureExpired or BadSignature."""
    data = signing.loads(token, salt=ACK_SALT, max_age=settings.ACK_LINK_MAX_AGE)
    return int(data["i"]), int(data["n"])


def token_incident(token: str) -> int | None:
    """The incident an expired (but genuine) token names; None for a forged one."""
    try:
        data = signing.loads(token, salt=ACK_SALT)
    except signing.BadSignature:
        return None
    return int(data["i"])


def message_for(notification: Notification) -> notify.Message:
    incident = notification.incident
    ack_url = ""
    if notification.kind == Notification.PAGE and incident.status == Status.DECLARED:
        ack_url = absolute(reverse("incidents:ack_link", args=[ack_token(notification)]))
    invite: list[str] = []
    if notification.kind == Notification.CHANNEL:
        invite = sorted(
            {
                person_for(c, notification.created_at).slack
                for c in EscalationContact.objects.filter(pk__in=_told_contacts(incident))
            }
            - {""}
        )
    return notify.Message(
        kind=notification.kind,
        subject=notification.subject,
        text=notification.text,
        incident_id=incident.pk,
        channel_name=incident.channel_name,
        url=absolute(incident.get_absolute_url()),
        ack_url=ack_url,
        recipient=notification.recipient,
        role=notification.role,
        data={"reason": notification.reason, "invite": invite},
    )


def deliver(notification_id: int, *, now: datetime | None = None) -> tuple[str, int | None]:
    """Claim, send, record. Returns (outcome, seconds until a retry or None)."""
    now = now or timezone.now()
    if not claim(notification_id, now):
        return "not pending", None
    notification = Notification.objects.select_related("incident__severity").get(pk=notification_id)
    channel = notify.CHANNELS[notification.channel]()
    try:
        detail = channel.send(message_for(notification), notification.address)
    except notify.DeliveryError as exc:
        return _failed(notification, str(exc), permanent=exc.permanent)
    except Exception as exc:  # a channel bug must not leave the row "sending"
        return _failed(notification, f"{type(exc).__name__}: {exc}", permanent=True)
    sent_at = timezone.now()
    with transaction.atomic():
        Notification.objects.filter(pk=notification.pk).update(
            status=NotificationStatus.SENT, sent_at=sent_at, last_error=""
        )
        _event(
            notification.incident,
            EventKind.NOTIFICATION,
            f"{_what(notification)} sent by {notification.get_channel_display().lower()}: {detail}",
            data={"notification": notification.pk, "status": "sent"},
            at=sent_at,
        )
    return "sent", None


def _failed(notification: Notification, error: str, *, permanent: bool) -> tuple[str, int | None]:
    attempts = notification.attempts
    retry = not permanent and attempts <= len(RETRY_BACKOFF)
    channel = notification.get_channel_display().lower()
    with transaction.atomic():
        if retry:
            wait = RETRY_BACKOFF[attempts - 1]
            Notification.objects.filter(pk=notification.pk).update(
                status=NotificationStatus.PENDING,
                last_error=error[:2000],
                due_at=timezone.now() + timedelta(seconds=wait),
            )
            message = (
                f"{_what(notification)} by {channel} failed ({error}): retrying in {wait} s "
                f"(attempt {attempts} of {len(RETRY_BACKOFF) + 1})"
            )
        else:
            wait = None
            Notification.objects.filter(pk=notification.pk).update(
                status=NotificationStatus.FAILED, last_error=error[:2000]
            )
            message = f"{_what(notification)} by {channel} failed: {error}"
        _event(
            notification.incident,
            EventKind.NOTIFICATION,
            message,
            data={
                "notification": notification.pk,
                "status": "retrying" if retry else "failed",
                "error": error[:500],
            },
        )
    return ("retrying" if retry else "failed"), wait


def _what(notification: Notification) -> str:
    if notification.kind == Notification.CHANNEL:
        return f"Incident channel {notification.address}"
    if notification.kind == Notification.UPDATE:
        return f"Status update to {notification.recipient}"
    return f"Page to {notification.recipient}"


# --- the beat: escalate what is due, recover what was lost -------------------------------


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
            enqueue(created)
            ids += created
    return ids


def requeue_stale(now: datetime | None = None) -> list[int]:
    """Rows a dead worker held past the lease go back to pending; pending rows nobody
    picked up (a lost task, a broker outage) are sent to the broker again."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.NOTIFY_SEND_LEASE)
    with transaction.atomic():
        lost = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(status=NotificationStatus.SENDING, claimed_at__lt=now - lease)
            .select_related("incident")
        )
        for row in lost:
            Notification.objects.filter(pk=row.pk, status=NotificationStatus.SENDING).update(
                status=NotificationStatus.PENDING,
                due_at=now,
                last_error="worker lost while sending",
            )
            _event(
                row.incident,
                EventKind.NOTIFICATION,
                f"{_what(row)} by {row.get_channel_display().lower()}: the worker was lost "
                "while sending, sending again",
                data={"notification": row.pk, "status": "requeued"},
                at=now,
            )
    grace = timedelta(seconds=settings.NOTIFY_REQUEUE_AFTER)
    waiting = list(
        Notification.objects.filter(
            status=NotificationStatus.PENDING, due_at__lte=now - grace
        ).values_list("pk", flat=True)
    ) + [row.pk for row in lost]
    with transaction.atomic():
        enqueue(sorted(set(waiting)))
    return sorted(set(waiting))


def _event(
    incident: Incident,
    kind: str,
    message: str,
    *,
    data: dict[str, object],
    at: datetime | None = None,
) -> TimelineEvent:
    from .services import append_event

    return append_event(incident, kind, message, data=data, at=at)


def _name(user: AbstractBaseUser | None) -> str:
    from .services import _name as name

    return name(user)


def record_expired_link(incident_id: int, user: AbstractBaseUser) -> None:
    """Someone used a genuine but expired acknowledge link: say so, change nothing."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return
    who = _name(user) if user.is_authenticated else "Someone"
    _event(
        incident,
        EventKind.NOTIFICATION,
        f"{who} used an expired acknowledge link: nothing changed",
        data={"ack_link": "expired"},
    )
