"""Paging listens to the incident's signals: declaring, a new severity or new
flags tell whoever the rules now name; acknowledging stops the pages not yet
sent; a status update goes to everyone told so far."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Task
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.dispatch import receiver

from .. import signals
from ..models import EventKind, Incident, TimelineEvent
from ..timeline import append_event
from . import tasks
from .outbox import cancel_pending

log = logging.getLogger(__name__)


def _send_on_commit(task: Task, pk: int) -> None:
    """Queue the task once the change commits. If the broker is down, the beat's
    `escalate_due` does the paging within ESCALATION_CHECK_INTERVAL."""

    def send() -> None:
        try:
            task.delay(pk)
        except Exception as exc:  # the broker: never fail the incident's workflow
            log.warning("could not enqueue %s(%s): %s", task.name, pk, exc)

    transaction.on_commit(send)


def _page(incident: Incident, **_: Any) -> None:
    _send_on_commit(tasks.page_incident, incident.pk)


for _signal in (signals.incident_declared, signals.severity_changed, signals.flags_changed):
    _signal.connect(_page, sender=Incident, dispatch_uid=f"paging-{id(_signal)}")


@receiver(signals.incident_acknowledged, sender=Incident, dispatch_uid="paging-ack")
def stop_pages(incident: Incident, actor: AbstractBaseUser | None, now: datetime, **_: Any) -> None:
    """In the acknowledging transaction: a page still waiting never goes out."""
    cancelled = cancel_pending(incident)
    if cancelled:
        append_event(
            incident,
            EventKind.ESCALATION,
            f"Escalation stopped: {cancelled} pending page{'s' if cancelled > 1 else ''} cancelled",
            data={"cancelled": cancelled},
            at=now,
        )


@receiver(signals.status_update_posted, sender=Incident, dispatch_uid="paging-status-update")
def fan_out(incident: Incident, event: TimelineEvent, **_: Any) -> None:
    _send_on_commit(tasks.fan_out_status_update, event.pk)
