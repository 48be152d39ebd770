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
    event = TimelineEvent.objects.create(
        incident=incident,
        kind=kind,
        message=message,
        actor=actor,
        data=data or {},
        created_at=at or timezone.now(),
    )
    incident_id, event_id = event.incident_id, event.pk
    transaction.on_commit(lambda: live.publish(incident_id, event_id))
    return event
