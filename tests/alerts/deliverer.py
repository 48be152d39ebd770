"""A separate process that posts one Alertmanager delivery from each of its threads,
all released at once by a barrier shared with the other processes (see
test_concurrency.py). Runs Django against the test database named by the parent.
Puts each thread's status on `results`, then {"published": [task names queued]}."""

from __future__ import annotations

import os
import threading
from typing import Any


def deliver(
    database_url: str, token: str, body: str | list[str], threads: int, barrier: Any, results: Any
) -> None:
    """`body` is every thread's, or a list of one body per thread."""
    bodies = body if isinstance(body, list) else [body] * threads
    os.environ.update(
        DJANGO_SETTINGS_MODULE="lotoops.settings", DATABASE_URL=database_url, DATABASE_POOL="0"
    )
    import django

    django.setup()
    from celery.signals import before_task_publish
    from django.db import connection
    from django.test import Client

    from lotoops.celery import app

    app.conf.broker_url = "memory://"  # nothing this process queues reaches a real worker
    published: list[str] = []  # the tasks this process queued, reported at the end

    @before_task_publish.connect(weak=False)
    def count(sender: str | None = None, **_: Any) -> None:
        published.append(str(sender))

    def one(body: str) -> None:
        client = Client(HTTP_HOST="127.0.0.1")
        try:
            barrier.wait(timeout=60)
            response = client.post(
                "/hooks/alertmanager/",
                data=body,
                content_type="application/json",
                headers={"Authorization": f"Bearer {token}"},
            )
            results.put(response.status_code)
        except Exception as exc:  # reported to the parent, which fails the test
            results.put(repr(exc))
        finally:
            connection.close()

    workers = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    results.put({"published": published})
