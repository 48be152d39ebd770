"""50 identical deliveries at the same moment, from several processes, on PostgreSQL:
one incident, one timeline entry per alert (what retries and HA pairs amount to)."""

from __future__ import annotations

import json
import multiprocessing
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from alerts.models import Alert, Delivery
from incidents.models import EventKind, Incident
from tests.alerts.deliverer import deliver
from tests.alerts.helpers import alert, payload

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES, THREADS = 5, 10


def test_fifty_concurrent_duplicate_deliveries_land_once(am_token, pg_target):
    body = json.dumps(payload(alert("A", instance="db-1"), alert("A", instance="db-2"), alert("B")))
    parts = urlsplit(settings.DATABASE_URL)
    test_db = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES * THREADS)
    results = spawn.Queue()
    processes = [
        spawn.Process(target=deliver, args=(test_db, am_token, body, THREADS, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    statuses = [results.get(timeout=120) for _ in range(PROCESSES * THREADS)]
    for process in processes:
        process.join(timeout=30)

    assert statuses == [200] * 50
    incident = Incident.objects.get()
    assert incident.timeline.filter(kind=EventKind.DECLARED).count() == 1
    alerts = incident.timeline.filter(kind=EventKind.ALERT)
    assert sorted(e.data["fingerprint"] for e in alerts) == sorted(
        Alert.objects.values_list("fingerprint", flat=True)
    )
    assert Alert.objects.filter(incident=incident).count() == 3
    assert Delivery.objects.count() == 50
    assert sum(Delivery.objects.values_list("new_alerts", flat=True)) == 3
    # The category's diagnostics started once, not once per delivery.
    assert incident.check_runs.count() == 3
