"""One lock order for the timeline and the outbox: the incident first, then its
notifications. Two processes, each sweeping lost notifications back to pending (which
appends to the timeline) while writing to the same incidents' timelines and
notifications, for several seconds: no deadlock, every round done."""

from __future__ import annotations

import multiprocessing
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from incidents.models import EventKind, Notification
from tests import factories
from tests.incidents.lock_order_worker import run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES, SECONDS = 2, 8.0


def test_requeueing_and_appending_at_once_never_deadlock(responder):
    incidents = [factories.declare(actor=responder, title=f"Outage {n}") for n in range(3)]
    for incident in incidents:
        for n in range(3):
            Notification.objects.create(
                incident=incident,
                recipient_key=f"contact:{n}",
                recipient=f"Person {n}",
                channel="email",
                address=f"p{n}@lotolink.test",
                reason="rule",
                subject="Page",
                text="Page",
            )
    parts = urlsplit(settings.DATABASE_URL)
    test_db = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    barrier = spawn.Barrier(PROCESSES)
    ids = [i.pk for i in incidents]
    processes = [
        spawn.Process(target=run, args=(test_db, ids, SECONDS, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    assert [r["errors"] for r in reports] == [[], []]
    # Every thread got through (rounds are slow on a loaded 2-core machine).
    assert all(min(r["rounds"].values()) >= 1 for r in reports), reports
    requeued = sum(
        i.timeline.filter(kind=EventKind.NOTIFICATION, data__status="requeued").count()
        for i in incidents
    )
    notes = sum(i.timeline.filter(kind=EventKind.NOTE).count() for i in incidents)
    assert notes == len(incidents) * sum(r["rounds"]["writer"] for r in reports)
    assert requeued >= 9  # every row was requeued at least once
    for incident in incidents:  # the timeline's sequence has no gap and no double
        seqs = list(incident.timeline.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
