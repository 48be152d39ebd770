"""A separate process for test_lock_order.py. For `seconds`, three threads at once
(each its own database connection), over and over: a sweeper marking every
notification claimed by a worker that then died (one row per statement, as
outbox.claim does) and running the outbox's sweep (`requeue_stale`) that puts them
back on the timeline; a sender delivering them (`outbox.deliver`: the row marked
sent, the timeline told); and a writer appending to each incident's timeline and then
updating its notifications in one transaction (the incident before its rows, as
acknowledging does). Reports the rounds each ran and every database error."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import timedelta
from typing import Any


def run(
    database_url: str, incident_ids: list[int], seconds: float, barrier: Any, results: Any
) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="lotoops.settings", DATABASE_URL=database_url, DATABASE_POOL="0"
    )
    import django

    django.setup()
    from django.conf import settings
    from django.db import DatabaseError, connection, transaction
    from django.utils import timezone

    from incidents.models import EventKind, Incident, Notification, NotificationStatus
    from incidents.paging import outbox
    from incidents.timeline import append_event
    from lotoops.celery import app

    app.conf.broker_url = "memory://"  # the requeued rows' tasks reach no worker
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    incidents = list(Incident.objects.filter(pk__in=incident_ids))
    ids = list(Notification.objects.filter(incident__in=incidents).values_list("pk", flat=True))
    connection.close()
    rounds = {"sweeper": 0, "writer": 0, "sender": 0}
    errors: list[str] = []

    def sweep() -> None:
        for pk in random.sample(ids, len(ids)):
            Notification.objects.filter(pk=pk).update(
                status=NotificationStatus.SENDING,
                claimed_at=timezone.now() - timedelta(hours=1),
            )
        outbox.requeue_stale()

    def write() -> None:
        for incident in random.sample(incidents, len(incidents)):
            with transaction.atomic():
                append_event(incident, EventKind.NOTE, f"writer {os.getpid()}")
                Notification.objects.filter(incident=incident).update(
                    last_error=f"writer {os.getpid()}"
                )

    def send() -> None:
        for pk in random.sample(ids, len(ids)):
            outbox.deliver(pk)  # sent by email: the row, then the incident's timeline

    def loop(name: str, work: Any, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                try:
                    work()
                    rounds[name] += 1
                except DatabaseError as exc:
                    errors.append(f"{name}: {type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            connection.close()

    barrier.wait(timeout=60)  # every process starts at once
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=loop, args=("sweeper", sweep, deadline)),
        threading.Thread(target=loop, args=("writer", write, deadline)),
        threading.Thread(target=loop, args=("sender", send, deadline)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"rounds": rounds, "errors": errors})
