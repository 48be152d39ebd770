"""50 deliveries at the same moment, from several processes, on PostgreSQL: identical
ones give one incident, one timeline entry per alert, one page per person (what
retries and HA pairs amount to); ones joining an open incident (the path without the
group's lock) add each new alert once."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from alerts.models import Alert, Delivery
from incidents.models import EventKind, Incident, Notification
from incidents.paging.tasks import page_incident
from tests.alerts.deliverer import deliver
from tests.alerts.helpers import alert, payload
from tests.incidents.escalation_helpers import give_contacts_addresses

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES, THREADS = 5, 10


def assert_started_once(incident: Incident) -> None:
    """Each of the category's automatic diagnostics has exactly one run."""
    steps = list(incident.check_runs.values_list("step_id", flat=True))
    assert steps and len(steps) == len(set(steps)), steps


def run_deliveries(token: str, bodies: list[str]) -> tuple[list[object], Counter[str]]:
    """Each body posted by its own thread, PROCESSES processes, all released at once:
    the statuses, and the tasks the processes queued."""
    parts = urlsplit(settings.DATABASE_URL)
    test_db = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(len(bodies))
    results = spawn.Queue()
    per = len(bodies) // PROCESSES
    processes = [
        spawn.Process(
            target=deliver,
            args=(test_db, token, bodies[n * per : (n + 1) * per], per, barrier, results),
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in range(len(bodies) + PROCESSES)]
    for process in processes:
        process.join(timeout=30)
    statuses = [r for r in reports if not isinstance(r, dict)]
    tasks = Counter(t for r in reports if isinstance(r, dict) for t in r["published"])
    return statuses, tasks


def test_fifty_concurrent_duplicate_deliveries_land_once(am_token, pg_target):
    give_contacts_addresses()
    body = json.dumps(payload(alert("A", instance="db-1"), alert("A", instance="db-2"), alert("B")))

    statuses, tasks = run_deliveries(am_token, [body] * (PROCESSES * THREADS))

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
    assert_started_once(incident)
    # Paging was asked for once; run (twice, as a retry would): one page per person.
    assert tasks["incidents.paging.tasks.page_incident"] == 1, tasks
    page_incident.apply(args=(incident.pk,))
    page_incident.apply(args=(incident.pk,))
    pages = Counter(
        incident.notifications.filter(kind=Notification.PAGE).values_list(
            "recipient_key", "channel"
        )
    )
    assert pages and set(pages.values()) == {1}


def test_fifty_concurrent_deliveries_joining_an_open_incident_land_once(am_token, pg_target):
    """The join path (no group lock): an open incident, then 50 deliveries at once, each
    with the same three new alerts (in three orders) and one of its own."""
    first = json.dumps(payload(alert("A", instance="db-0")))
    statuses, _ = run_deliveries(am_token, [first] * PROCESSES)
    assert statuses == [200] * PROCESSES
    incident = Incident.objects.get()
    shared = [alert("A", instance=f"db-{n}") for n in (1, 2, 3)]
    bodies = []
    for n in range(PROCESSES * THREADS):
        mine = shared[n % 3 :] + shared[: n % 3]
        bodies.append(json.dumps(payload(*mine, alert("A", instance=f"own-{n}"))))

    statuses, tasks = run_deliveries(am_token, bodies)

    assert statuses == [200] * 50
    assert tasks["incidents.paging.tasks.page_incident"] == 0  # joining pages nobody
    assert Incident.objects.count() == 1
    alerts = incident.timeline.filter(kind=EventKind.ALERT)
    fingerprints = [e.data["fingerprint"] for e in alerts]
    assert len(fingerprints) == len(set(fingerprints)) == 1 + 3 + 50
    assert set(fingerprints) == set(Alert.objects.values_list("fingerprint", flat=True))
    assert Alert.objects.filter(incident=incident).count() == 54
    assert sum(Delivery.objects.values_list("new_alerts", flat=True)) == 54
    seqs = list(incident.timeline.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert_started_once(incident)  # by the declaring alert only
