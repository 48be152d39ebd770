"""A separate process for the Stripe flood test (test_stripe_flood.py): posts signed
Stripe events to /hooks/stripe/ from its threads, or records webhook endpoint errors
as the beat's sweep does, all released at once by a barrier shared with the other
processes. Puts a list of its results (statuses, or new/duplicate) on `results`."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from typing import Any


def signed(body: str, secret: str) -> str:
    at = int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def post_events(
    database_url: str, secret: str, events: list[dict[str, Any]], threads: int, barrier: Any,
    results: Any,
) -> None:  # fmt: skip
    os.environ.update(
        DJANGO_SETTINGS_MODULE="lotoops.settings",
        DATABASE_URL=database_url,
        DATABASE_POOL="0",
        STRIPE_WEBHOOK_SECRET=secret,
        STRIPE_DECLARE_THRESHOLD="0",
    )
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from lotoops.celery import app

    app.conf.broker_url = "memory://"  # the summaries' tasks reach no worker: the sweep does
    statuses: list[object] = []

    def one(mine: list[dict[str, Any]]) -> None:
        client = Client(HTTP_HOST="127.0.0.1")
        try:
            for event in mine:
                body = json.dumps(event)
                response = client.post(
                    "/hooks/stripe/",
                    data=body,
                    content_type="application/json",
                    headers={"Stripe-Signature": signed(body, secret)},
                )
                statuses.append(response.status_code)
        except Exception as exc:  # reported to the parent, which fails the test
            statuses.append(repr(exc))
        finally:
            connection.close()

    barrier.wait(timeout=60)
    workers = [threading.Thread(target=one, args=(events[n::threads],)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    results.put(statuses)


def record_webhook_errors(
    database_url: str, rows: list[dict[str, Any]], barrier: Any, results: Any
) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="lotoops.settings",
        DATABASE_URL=database_url,
        DATABASE_POOL="0",
        STRIPE_DECLARE_THRESHOLD="0",
    )
    import django

    django.setup()
    from alerts import payments
    from lotoops.celery import app

    app.conf.broker_url = "memory://"
    barrier.wait(timeout=60)
    outcomes = payments.webhook_errors(rows)
    results.put(["duplicate" if o.duplicate else "new" for o in outcomes])
