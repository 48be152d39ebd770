"""Wake the live streams whenever a timeline event commits, whoever wrote it
(a view, a Celery task, the admin)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from . import live
from .models import TimelineEvent


@receiver(post_save, sender=TimelineEvent, dispatch_uid="timeline-publish")
def publish_timeline_event(sender: type, instance: TimelineEvent, created: bool, **_: Any) -> None:
    if created:
        incident_id, event_id = instance.incident_id, instance.pk
        transaction.on_commit(lambda: live.publish(incident_id, event_id))
