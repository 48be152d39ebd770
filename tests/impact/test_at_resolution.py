"""The money at risk at resolution is a reading taken at resolution: when a payment
or banca incident is resolved, one sample is queued on commit and taken by a worker
(here Celery runs it eagerly, after the test's commit callbacks), and the draft's
Impact section is redrawn with it. Plays change between the last periodic reading
and the resolution, so an older reading could not pass for it. When the reading at
resolution fails, or comes too late, the post-mortem says its figure is the last
reading before resolution, with its time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from diagnostics import impact
from diagnostics.models import Runbook
from diagnostics.tasks import sample_money_at_resolution
from incidents import services
from incidents.models import EventKind, ImpactSample, PostMortem, Status
from incidents.postincident.postmortem import save_section
from lotoops.celery import app
from tests import factories
from tests.impact.platform_db import add_plays, reset_plays

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

STUCK = [(70, "pending", 450, "USD", "banca-oeste", "processing", 11)]


def local(at):
    return f"{timezone.localtime(at):%Y-%m-%d %H:%M %Z}"


@pytest.fixture
def eager() -> Iterator[None]:
    """The queued task runs in this process when its commit callback runs (a worker's
    job, done here; the browser walk uses a real worker)."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


@pytest.fixture
def periodic(platform, responder):
    """A payment incident with two periodic readings, the last six minutes before the
    resolution; the plays change after it (more stuck), so the figure at resolution
    differs from the last periodic reading."""
    Runbook.objects.update(recovery_checks=[])  # verified recovery: the browser walk
    incident = factories.declare(actor=responder, category="payment")
    start = timezone.now() - timedelta(minutes=10)
    impact.take_sample(incident, now=start)
    last = impact.take_sample(incident, now=start + timedelta(minutes=4))
    reset_plays([(65, "pending", 100, "USD", "banca-norte", "processing", 1)])
    add_plays(STUCK)  # after the last periodic reading: 5.50 USD, 2 plays, 2 players
    services.acknowledge_incident(incident, actor=responder)
    return incident, last


def resolve(incident, responder, capture):
    with capture(execute=True) as callbacks:
        services.transition_incident(incident, Status.RESOLVED, actor=responder)
    incident.refresh_from_db()
    return callbacks


def test_the_impact_carries_the_reading_taken_at_resolution(
    periodic, responder, eager, django_capture_on_commit_callbacks
):
    incident, last = periodic
    resolve(incident, responder, django_capture_on_commit_callbacks)
    reading = ImpactSample.objects.get(incident=incident, for_resolution__isnull=False)
    assert reading.for_resolution == incident.resolved_at
    assert reading.ok and reading.taken_at >= incident.resolved_at
    assert (reading.plays_long, reading.users_long) == (2, 2)
    assert reading.long_totals() == {"USD": 550} != last.long_totals()
    pm = PostMortem.objects.get(incident=incident)
    assert f"; 5.50 USD at resolution (read {local(reading.taken_at)})." in pm.impact_revenue
    assert f"; 2 at resolution (read {local(reading.taken_at)})." in pm.impact_data
    assert "before resolution" not in pm.impact_revenue
    assert "3 readings from" in pm.impact_revenue
    assert pm.version == 2 and pm.updated_by is None
    note = incident.timeline.get(kind=EventKind.NOTE, data__postmortem=["impact"])
    assert note.message == "LotoOps redrew the post-mortem's impact with the reading at resolution"
    # A second delivery of the task (a retry, a second worker) reads nothing more.
    resolved_at = incident.resolved_at.isoformat()
    assert sample_money_at_resolution(incident.pk, resolved_at).startswith("not taken")
    assert ImpactSample.objects.filter(incident=incident).count() == 3


def test_a_failed_reading_at_resolution_leaves_the_last_reading_before_it_named_so(
    periodic, platform, responder, eager, django_capture_on_commit_callbacks
):
    incident, last = periodic
    platform.url = "postgres://postgres@127.0.0.1:5432/no_such_platform_db"
    platform.save()
    resolve(incident, responder, django_capture_on_commit_callbacks)
    reading = ImpactSample.objects.get(incident=incident, for_resolution__isnull=False)
    assert "no_such_platform_db" in reading.error
    pm = PostMortem.objects.get(incident=incident)
    for text in (pm.impact_users, pm.impact_revenue, pm.impact_data):
        assert f"at the last reading before resolution ({local(last.taken_at)}; " in text
        assert "the reading at resolution failed: " in text and "no_such_platform_db" in text
        assert "at resolution (read" not in text
    last_totals = "5,000.00 DOP + 12.34 EUR + 700 JPY + 35.50 USD"
    assert f"; {last_totals} at the last reading before resolution" in pm.impact_revenue


def test_a_reading_taken_up_late_is_not_called_the_figure_at_resolution(
    periodic, responder, django_capture_on_commit_callbacks
):
    incident, last = periodic
    callbacks = resolve(incident, responder, django_capture_on_commit_callbacks)
    assert callbacks  # the task was queued (to a queue no worker reads here)
    assert not ImpactSample.objects.filter(for_resolution__isnull=False).exists()
    late = incident.resolved_at + timedelta(seconds=impact.AT_RESOLUTION_WITHIN + 30)
    reading = impact.sample_at_resolution(incident.pk, incident.resolved_at, now=late)
    assert reading is not None and "took the reading at resolution up 90 s after" in reading.error
    pm = PostMortem.objects.get(incident=incident)
    assert f"at the last reading before resolution ({local(last.taken_at)}; " in pm.impact_revenue
    assert "at resolution (read" not in pm.impact_revenue


def test_an_edited_impact_is_kept_and_a_reopened_incident_is_not_read(
    periodic, responder, django_capture_on_commit_callbacks
):
    incident, _ = periodic
    resolve(incident, responder, django_capture_on_commit_callbacks)
    pm = PostMortem.objects.get(incident=incident)
    original = {"impact_users": pm.impact_users, "impact_revenue": pm.impact_revenue}
    original["impact_data"] = pm.impact_data
    edited = original | {"impact_revenue": "About 5 USD, counted by hand."}
    save_section(pm, "impact", edited, version=pm.version, original=original, actor=responder)
    reading = impact.sample_at_resolution(incident.pk, incident.resolved_at)
    assert reading is not None and reading.ok
    pm.refresh_from_db()
    assert pm.impact_revenue == "About 5 USD, counted by hand."  # theirs, not redrawn
    resolved_at = incident.resolved_at
    services.reopen_incident(incident, actor=responder, reason="plays stuck again")
    assert impact.sample_at_resolution(incident.pk, resolved_at) is None


def test_a_database_incident_takes_no_reading(
    platform, responder, eager, django_capture_on_commit_callbacks
):
    incident = factories.declare(actor=responder, category="database")
    services.acknowledge_incident(incident, actor=responder)
    resolve(incident, responder, django_capture_on_commit_callbacks)
    assert not ImpactSample.objects.exists()


def test_a_commanders_override_takes_the_reading_at_resolution_too(
    platform, responder, eager, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Group

    from diagnostics.recovery import override_resolution, recovery_checks_for

    commander = factories.UserFactory(username="carla")
    commander.groups.add(Group.objects.get(name="Incident commanders"))
    incident = factories.declare(actor=responder, category="payment")
    assert recovery_checks_for(incident)  # resolving would verify recovery first
    impact.take_sample(incident, now=timezone.now() - timedelta(minutes=3))
    add_plays(STUCK)  # one more stuck since that reading
    services.acknowledge_incident(incident, actor=responder)
    with django_capture_on_commit_callbacks(execute=True):
        override_resolution(incident, actor=commander, reason="Finance confirms the plays by phone")
    incident.refresh_from_db()
    assert incident.status == Status.RESOLVED
    reading = ImpactSample.objects.get(incident=incident, for_resolution=incident.resolved_at)
    assert reading.plays_long == 6
    pm = PostMortem.objects.get(incident=incident)
    assert f"; 6 at resolution (read {local(reading.taken_at)})." in pm.impact_data
