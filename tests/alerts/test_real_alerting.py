"""A real Prometheus rule fires through a real Alertmanager (and an HA pair of them)
into LotoOps' receiver, served by the ASGI server."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import pytest

from alerts import tokens
from alerts.models import Delivery
from alerts.seed import seed_alerts
from diagnostics.models import CheckRun, RunStatus, Target
from diagnostics.seed import seed_runbooks
from incidents.models import Category, EventKind, Incident, Notification
from incidents.paging.tasks import page_incident
from tests.alerts.alerting_stack import ALERTMANAGER, PROMETHEUS, start_stack
from tests.conftest import _missing
from tests.incidents.escalation_helpers import give_contacts_addresses

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def alerting(asgi_server):
    for binary, package in ((PROMETHEUS, "prometheus"), (ALERTMANAGER, "prometheus-alertmanager")):
        if not os.path.exists(binary):
            _missing(f"this test needs {binary} (apt-get install -y {package})")
    seed_runbooks()
    seed_alerts()
    Target.objects.create(
        name="lotolink-db", kind="postgres", url="postgresql://lotolink@127.0.0.1:1/lotolink"
    )
    started = []

    def start(count: int):
        issued = [tokens.issue(f"alertmanager-{i}")[1] for i in range(count)]
        stack = start_stack(f"{asgi_server.url}/hooks/alertmanager/", issued)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def wait_for(what: Callable[[], object], stack, seconds: float = 60.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"gave up after {seconds} s\n{stack.logs()}")


def test_a_firing_rule_opens_an_incident_and_resolving_it_is_on_the_timeline(alerting):
    stack = alerting(1)
    stack.target.up = False

    incident = wait_for(lambda: Incident.objects.first(), stack)
    assert (incident.severity.key, incident.category) == ("P0", Category.DATABASE)
    assert incident.title == "Lotolink's PostgreSQL is down"
    first = incident.timeline.get(kind=EventKind.ALERT)
    assert first.message == "First alert triggered: PostgresDown: Lotolink's PostgreSQL is down"
    assert first.created_at <= incident.declared_at
    runs = CheckRun.objects.filter(incident=incident)
    assert runs.count() == 4 and {r.status for r in runs} == {RunStatus.QUEUED}

    stack.target.up = True
    resolved = wait_for(
        lambda: incident.timeline.filter(kind=EventKind.ALERT, data__resolved=True).first(), stack
    )
    assert resolved.message == "Alert resolved: PostgresDown: Lotolink's PostgreSQL is down"
    assert Incident.objects.count() == 1


# Two Alertmanagers deliver the same group at once into the live server's threads: the
# test database on SQLite is in memory with a shared cache, whose table locks ignore the
# busy timeout ("database table is locked"). The embedded default's file database (WAL,
# immediate transactions, a busy timeout) is not like that; the race is PostgreSQL's.
@pytest.mark.postgres
def test_an_ha_pair_delivering_the_same_group_opens_one_incident_and_pages_once(alerting):
    give_contacts_addresses()
    stack = alerting(2)
    stack.target.up = False

    incident = wait_for(lambda: Incident.objects.first(), stack)
    # Both members deliver: with a zero peer timeout neither waits for the gossip to
    # say the other one sent (the worst case of an HA pair, and of retries).
    both = {"alertmanager-0", "alertmanager-1"}
    wait_for(lambda: set(Delivery.objects.values_list("token__name", flat=True)) == both, stack)
    page_incident.apply(args=(incident.pk,))
    page_incident.apply(args=(incident.pk,))

    assert Incident.objects.count() == 1
    assert incident.timeline.filter(kind=EventKind.DECLARED).count() == 1
    assert incident.timeline.filter(kind=EventKind.ALERT).count() == 1
    pages = Counter(
        Notification.objects.filter(incident=incident, kind=Notification.PAGE).values_list(
            "recipient_key", "channel"
        )
    )
    assert pages and set(pages.values()) == {1}
