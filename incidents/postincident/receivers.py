"""Post-incident listens to resolution: inside the resolving transaction, so a
failure to start the follow-ups aborts the resolution rather than losing them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.dispatch import receiver

from .. import signals
from ..models import Incident
from .followups import start_post_incident


@receiver(signals.incident_resolved, sender=Incident, dispatch_uid="postincident-resolved")
def start_follow_ups(
    incident: Incident, actor: AbstractBaseUser | None, now: datetime, **_: Any
) -> None:
    start_post_incident(incident, actor=actor, now=now)
