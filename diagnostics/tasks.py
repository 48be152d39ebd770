"""Celery tasks of the diagnostics app."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from .models import WorkerHeartbeat


@shared_task(ignore_result=True)
def heartbeat(hostname: str | None = None) -> str:
    """Record that a worker is alive (beat sends this every 15 s)."""
    name = hostname or heartbeat.request.hostname or "worker"
    WorkerHeartbeat.objects.update_or_create(hostname=name, defaults={"seen_at": timezone.now()})
    return name


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Visible in /healthz at once, not only after beat's first heartbeat.
    heartbeat(hostname=getattr(sender, "hostname", None))
