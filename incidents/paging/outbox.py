"""The outbox: one Notification row per message, created once (its unique key),
claimed once (a conditional UPDATE pending -> sending), delivered through its
channel, retried with backoff, cancelled on acknowledge, and every outcome
recorded on the incident's timeline.

A row whose worker died while sending (claimed longer ago than
NOTIFY_SEND_LEASE) is sent again: a page may then, rarely, arrive twice, but a
due page is never lost."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from ..models import (
    ChecklistItem,
    EscalationContact,
    EventKind,
    Incident,
    Notification,
    NotificationStatus,
    Status,
)
from ..timeline import append_event, lock_timeline
from . import channels as notify
from .acklinks import ack_token
from .oncall import person_for

log = logging.getLogger(__name__)


RETRY_BACKOFF = (10, 60, 300)  # seconds before attempts 2, 3 and 4


def absolute(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def restricted_line(incident: Incident) -> str:
    """What any message outside LotoOps says of a restricted incident: never its
    title, summary, flags or updates."""
    return (
        f"Restricted incident #{incident.pk} ({incident.severity.key} "
        f"{incident.get_category_display().lower()}): open LotoOps to see it"
    )


def _neutral(incident: Incident, subject: str, text: str) -> tuple[str, str]:
    """A row written before its incident became restricted still names its title
    or summary: what goes out then is the restricted line only."""
    said = f"{subject}\n{text}"
    if not any(part and part in said for part in (incident.title, incident.summary)):
        return subject, text
    line = restricted_line(incident)
    return f"[{incident.severity.key}] {line}"[
        :200
    ], f"{line}\nOpen: {absolute(incident.get_absolute_url())}"


def create_row(incident: Incident, **fields: object) -> Notification | None:
    """Create one row unless its key exists (a concurrent run made it first)."""
    try:
        with transaction.atomic():
            return Notification.objects.create(incident=incident, **fields)
    except IntegrityError:
        return None


def told_contacts(incident: Incident) -> set[int]:
    return set(
        incident.notifications.filter(kind=Notification.PAGE)
        .exclude(status=NotificationStatus.WITHHELD)
        .values_list("contact_id", flat=True)
    )


def channel_rows(incident: Incident, common: dict[str, object]) -> list[Notification | None]:
    """The rows of one message to the incident's own channels: its Slack channel and
    the webhook's stakeholders, where those channels are set up (None: already made)."""
    rows = []
    if notify.SlackChannel.enabled():
        rows.append(
            create_row(
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
            create_row(
                incident,
                recipient_key="channel",
                recipient="stakeholders",
                channel="webhook",
                address="webhook",
                **common,
            )
        )
    return rows


def remind(item: ChecklistItem, *, now: datetime) -> list[int]:
    """Rows telling that a post-incident checklist item is due: an email to the
    incident's commander (or its declarer), a post in its Slack channel, the
    webhook. Keyed by the item: remade after a re-resolution, never doubled."""
    incident = item.incident
    person = incident.commander or incident.declared_by
    due = timezone.localtime(item.due_at) if item.due_at else now
    url = absolute(incident.get_absolute_url())
    subject = f"[LotoOps] Post-incident task due for #{incident.pk} {incident.title}"
    text = (
        f"“{item.text}” ({item.get_phase_display().lower()}) was due "
        f"{due:%Y-%m-%d %H:%M %Z} for incident #{incident.pk} {incident.title}.\n\n{url}\n"
    )
    if incident.restricted:
        subject = f"[LotoOps] Post-incident task due for restricted incident #{incident.pk}"
        text = (
            f"A post-incident task was due {due:%Y-%m-%d %H:%M %Z} for restricted incident "
            f"#{incident.pk}: open LotoOps to see it.\n\n{url}\n"
        )
    common: dict[str, object] = {
        "reason": f"reminder-{item.pk}-{due:%Y%m%d%H%M}",
        "kind": Notification.REMINDER,
        "subject": subject[:200],
        "text": text,
        "created_at": now,
        "due_at": now,
        "why": "post-incident checklist reminder",
    }
    rows: list[Notification | None] = []
    if person is not None and person.email and notify.EmailChannel.enabled():
        rows.append(
            create_row(
                incident,
                recipient_key=f"user:{person.pk}",
                recipient=str(person)[:160],
                channel="email",
                address=person.email,
                **common,
            )
        )
    rows += channel_rows(incident, common)
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
        # The task module imports this one (it calls deliver): import it when sending.
        from .tasks import deliver_notification

        for pk in ids:
            try:
                deliver_notification.apply_async((pk,), queue=queue)
            except Exception as exc:  # the broker: never fail the incident's workflow
                log.warning("could not enqueue notification %s: %s", pk, type(exc).__name__)

    transaction.on_commit(send)


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
                for c in EscalationContact.objects.filter(pk__in=told_contacts(incident))
            }
            - {""}
        )
    subject, text = notification.subject, notification.text
    channel_name = incident.channel_name
    if incident.restricted:
        subject, text = _neutral(incident, subject, text)
        if notification.channel != "slack" or not settings.SLACK_BOT_TOKEN:
            # Only Slack's API needs it (to post there); named after the title
            # if the incident became restricted after declaration.
            channel_name = ""
    return notify.Message(
        kind=notification.kind,
        subject=subject,
        text=text,
        incident_id=incident.pk,
        channel_name=channel_name,
        url=absolute(incident.get_absolute_url()),
        ack_url=ack_url,
        recipient=notification.recipient,
        role=notification.role,
        data={"reason": notification.reason, "invite": invite},
        restricted=incident.restricted,
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
    if local := channel.not_delivered():
        return _not_delivered(notification, local, sent_at)
    channel_name = notification.get_channel_display().lower()
    _settle(
        notification,
        f"{_what(notification)} sent by {channel_name}: {detail}",
        "sent",
        sent_at,
        status=NotificationStatus.SENT,
        sent_at=sent_at,
        last_error="",
    )
    return "sent", None


def _settle(
    notification: Notification, message: str, outcome: str, at: datetime, **fields: Any
) -> None:
    """Record how a delivery ended, on its row and on the timeline, in one transaction:
    the incident locked before the row (the lock order of requeue_stale)."""
    with transaction.atomic():
        lock_timeline(notification.incident_id)
        Notification.objects.filter(pk=notification.pk).update(**fields)
        append_event(
            notification.incident,
            EventKind.NOTIFICATION,
            message,
            data={"notification": notification.pk, "status": outcome},
            at=at,
        )


def _not_delivered(notification: Notification, why: str, at: datetime) -> tuple[str, int | None]:
    """The channel took it, but nothing left the machine: recorded as such (never
    retried: it would only print again), and said plainly on the timeline."""
    channel = notification.get_channel_display().lower()
    advice = " (set EMAIL_HOST to send email)" if notification.channel == "email" else ""
    _settle(
        notification,
        f"{_what(notification)} by {channel} {why}{advice}",
        "not_delivered",
        at,
        status=NotificationStatus.NOT_DELIVERED,
        last_error=f"{why}{advice}",
    )
    return "not delivered", None


def _failed(notification: Notification, error: str, *, permanent: bool) -> tuple[str, int | None]:
    attempts = notification.attempts
    retry = not permanent and attempts <= len(RETRY_BACKOFF)
    channel = notification.get_channel_display().lower()
    with transaction.atomic():
        lock_timeline(notification.incident_id)  # the incident before the row
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
        append_event(
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
    if notification.kind == Notification.REMINDER:
        return f"Post-incident reminder to {notification.recipient}"
    return f"Page to {notification.recipient}"


def requeue_stale(now: datetime | None = None) -> list[int]:
    """Rows a dead worker held past the lease go back to pending; pending rows nobody
    picked up (a lost task, a broker outage) are sent to the broker again."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.NOTIFY_SEND_LEASE)
    stale = Q(status=NotificationStatus.SENDING, claimed_at__lt=now - lease)
    lost: list[Notification] = []
    candidates = Notification.objects.filter(stale).order_by("incident_id", "pk")
    for pk, incident_id in list(candidates.values_list("pk", "incident_id")):
        # One transaction per row, the incident locked before the row (the timeline's
        # lock order); the conditional update claims it once however many sweeps run.
        with transaction.atomic():
            lock_timeline(incident_id)
            if not Notification.objects.filter(stale, pk=pk).update(
                status=NotificationStatus.PENDING,
                due_at=now,
                last_error="worker lost while sending",
            ):
                continue
            row = Notification.objects.select_related("incident").get(pk=pk)
            lost.append(row)
            append_event(
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
