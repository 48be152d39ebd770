"""The only writer of an incident's timeline.

Every event (state changes, notes, check runs and results, notifications,
post-incident work) is appended here, and the incident's live streams are woken
once the event commits. Nothing else creates TimelineEvent rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from . import live
from .models import Incident, TimelineEvent


def actor_name(user: AbstractBaseUser | None) -> str:
    """How a person (or LotoOps itself, for None) is named on the timeline and in messages."""
    if user is None:
        return "LotoOps"
    full = getattr(user, "get_full_name", lambda: "")()
    return full or user.get_username()


def append_event(
    incident: Incident,
    kind: str,
    message: str,
    *,
    actor: AbstractBaseUser | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> TimelineEvent:
    """Add one event to the incident's timeline; its live streams wake on commit."""
    # Inside a caller's transaction, no savepoint of its own (two round trips fewer):
    # a database error here aborts the caller's transaction anyway on PostgreSQL.
    with transaction.atomic(savepoint=False):
        event = TimelineEvent.objects.create(
            incident=incident,
            seq=_next_seq(incident.pk),
            kind=kind,
            message=message,
            actor=actor,
            data=data or {},
            created_at=at or timezone.now(),
        )
    incident_id, seq = event.incident_id, event.seq
    transaction.on_commit(lambda: live.publish(incident_id, seq))
    if kind in live.DASHBOARD_KINDS:
        event_id = event.pk
        transaction.on_commit(lambda: live.publish(live.DASHBOARD, event_id))
    return event


def append_events(
    incident: Incident,
    events: list[tuple[str, str, dict[str, Any], datetime | None]],
) -> list[TimelineEvent]:
    """Add several events (kind, message, data, at) by LotoOps itself in one go: one
    lock of the incident, one insert, one wake-up of its streams (the last seq covers
    them all). For a batch such as an alert group's new alerts."""
    if not events:
        return []
    now = timezone.now()
    # No savepoint: a failure here fails the caller's whole transaction.
    with transaction.atomic(savepoint=False):
        first = _next_seq(incident.pk)
        rows = TimelineEvent.objects.bulk_create(
            [
                TimelineEvent(
                    incident=incident,
                    seq=first + n,
                    kind=kind,
                    message=message,
                    data=data or {},
                    created_at=at or now,
                )
                for n, (kind, message, data, at) in enumerate(events)
            ]
        )
    incident_id, seq = incident.pk, first + len(events) - 1
    transaction.on_commit(lambda: live.publish(incident_id, seq))
    if changed := [row.pk for row in rows if row.kind in live.DASHBOARD_KINDS]:
        event_id = max(changed)
        transaction.on_commit(lambda: live.publish(live.DASHBOARD, event_id))
    return rows


def lock_timeline(incident_id: int) -> None:
    """Take the lock `append_event` takes (the incident row, NO KEY UPDATE) now.

    The lock order everywhere is: the incident first, then the rows that hang off it
    (notifications, check runs, alerts). A transaction that changes such a row and
    then appends to the timeline calls this before touching the row, so it never
    holds the row while waiting for the incident that a writer holding the incident
    waits to take the row from (a deadlock PostgreSQL would break by failing one)."""
    list(Incident.objects.select_for_update(no_key=True).filter(pk=incident_id).values("pk"))


def _next_seq(incident_id: int) -> int:
    """The incident's next sequence number, taken under its row lock.

    The lock lasts until the caller's outermost transaction ends, so the next writer
    of this incident's timeline (any process) waits here until this event has
    committed: seq order is commit order, and a stream that has read seq n can never
    later find a new event below n. NO KEY UPDATE is enough to exclude other writers
    and, unlike FOR UPDATE, does not block inserts of rows that merely reference the
    incident (check runs, notifications). SQLite ignores FOR UPDATE, but it serialises
    writers: our transactions are IMMEDIATE (settings), so the write lock is taken at
    BEGIN and the MAX below is exact there as well. The unique (incident, seq)
    constraint turns any other mistake into an error, never into a skipped event."""
    lock_timeline(incident_id)
    last = TimelineEvent.objects.filter(incident_id=incident_id).aggregate(last=Max("seq"))
    return (last["last"] or 0) + 1
