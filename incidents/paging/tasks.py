"""Celery tasks of paging: thin, idempotent, keyed by primary key."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import transaction

from .. import logcontext
from ..models import OPEN_STATUSES, Incident, TimelineEvent
from . import decide, outbox, regulatory


def _queue(task: Any) -> str | None:
    """The queue this task came from: follow-up tasks go to the same workers."""
    info = getattr(task.request, "delivery_info", None) or {}
    return info.get("routing_key") or None


@shared_task(bind=True, ignore_result=True)
def page_incident(self: Any, incident_id: int) -> int:
    """Tell whoever must be told of this incident now (after declaring, or a change
    of severity or flags). Run twice, the second run finds every row made."""
    with logcontext.bind(incident=incident_id), transaction.atomic():
        incident = (
            Incident.objects.select_for_update()
            .select_related("severity")
            .filter(pk=incident_id, status__in=OPEN_STATUSES)
            .first()
        )
        if incident is None:
            return 0
        ids = decide.page(incident) + decide.page_channel(incident)
        outbox.enqueue(ids, _queue(self))
    return len(ids)


@shared_task(bind=True, ignore_result=True)
def fan_out_status_update(self: Any, event_id: int) -> int:
    event = TimelineEvent.objects.select_related("incident__severity", "actor").get(pk=event_id)
    with transaction.atomic():
        ids = decide.fan_out_update(event.incident, event)
        outbox.enqueue(ids, _queue(self))
    return len(ids)


@shared_task(bind=True, acks_late=True, ignore_result=True)
def deliver_notification(self: Any, notification_id: int) -> str:
    """Claim the row (pending -> sending), send it, record the outcome; a transient
    failure comes back after its backoff (the beat sweep is the safety net)."""
    outcome, retry_in = outbox.deliver(notification_id)
    if retry_in is not None:
        self.apply_async((notification_id,), countdown=retry_in, queue=_queue(self))
    return outcome


@shared_task(ignore_result=True)
def escalate_due() -> dict[str, int]:
    """Beat, every ESCALATION_CHECK_INTERVAL: page what is due (the SLA's and the
    regulatory clocks'), resend what was lost."""
    return {
        "paged": len(decide.escalate_due()),
        "regulatory": len(regulatory.escalate_due()),
        "requeued": len(outbox.requeue_stale()),
    }
