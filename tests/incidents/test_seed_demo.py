"""`seed_demo`: a year of demo history in bulk, consistent like the services' own."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from incidents.models import OPEN_STATUSES, ChecklistItem, Incident, Status, TimelineEvent

pytestmark = pytest.mark.usefixtures("db")

LIFECYCLE = (
    "declared_at",
    "acknowledged_at",
    "investigating_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
)


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_requested_number_of_incidents_with_a_one_line_summary() -> None:
    output = seed("--incidents", "50", "--seed", "1")

    assert Incident.objects.count() == 50
    assert output.count("\n") == 1
    assert output.startswith("Seeded 50 demo incidents")


def test_status_timestamps_follow_the_lifecycle_and_none_is_in_the_future() -> None:
    seed("--incidents", "50", "--seed", "2")
    now = timezone.now()

    for incident in Incident.objects.all():
        stamps = [getattr(incident, name) for name in LIFECYCLE]
        reached = [at for at in stamps if at is not None]
        assert stamps[: len(reached)] == reached, f"a gap in the lifecycle of {incident}"
        assert reached == sorted(reached) and len(set(reached)) == len(reached)
        assert reached[-1] < now
        assert len(reached) == list(Status.values).index(incident.status) + 1
        assert incident.response_deadline == incident.declared_at + incident.severity.response_time


def test_every_incident_has_a_timeline_in_time_order_starting_with_its_declaration() -> None:
    seed("--incidents", "50", "--seed", "3")

    timelines: dict[int, list[TimelineEvent]] = {}
    for event in TimelineEvent.objects.order_by("id"):
        timelines.setdefault(event.incident_id, []).append(event)
    assert set(timelines) == set(Incident.objects.values_list("pk", flat=True))
    for events in timelines.values():
        assert events[0].kind == "declared"
        assert events[0].created_at == events[0].incident.declared_at
        times = [event.created_at for event in events]
        assert times == sorted(times)


def test_most_incidents_are_closed_a_few_are_open_and_checklists_come_from_the_runbook() -> None:
    seed("--incidents", "200", "--seed", "4")

    assert 1 <= Incident.objects.filter(status__in=OPEN_STATUSES).count() <= 30
    assert Incident.objects.filter(status__in=[Status.RESOLVED, Status.CLOSED]).count() >= 150
    assert set(Incident.objects.values_list("category", flat=True)) >= {"payment", "banca"}
    assert all(incident.restricted for incident in Incident.objects.filter(category="security"))
    assert not ChecklistItem.objects.filter(done_at__gt=timezone.now()).exists()
    assert ChecklistItem.objects.values("incident").distinct().count() == 200


def test_the_big_timeline_incident_is_open_and_has_exactly_m_events() -> None:
    output = seed("--incidents", "20", "--big-timeline", "300", "--seed", "5")

    match = re.search(r"big timeline incident #(\d+) has 300 events", output)
    assert match, output
    big = Incident.objects.get(pk=int(match.group(1)))
    assert big.status == Status.INVESTIGATING
    assert big.timeline.count() == 300
    assert Incident.objects.count() == 21


def test_the_demo_user_is_a_responder_without_a_usable_password() -> None:
    seed("--incidents", "5")

    demo = get_user_model().objects.get(username="demo")
    assert not demo.has_usable_password()
    assert demo.groups.filter(name="Responders").exists()
    assert Incident.objects.filter(acknowledged_by=demo).exists()


def test_running_twice_adds_more() -> None:
    seed("--incidents", "10")
    seed("--incidents", "10")

    assert Incident.objects.count() == 20
    assert get_user_model().objects.filter(username="demo").count() == 1


def test_the_same_seed_tells_the_same_story() -> None:
    seed("--incidents", "30", "--seed", "9")
    first = list(Incident.objects.order_by("pk").values_list("title", "severity__key", "status"))
    Incident.objects.all().delete()
    seed("--incidents", "30", "--seed", "9")
    second = list(Incident.objects.order_by("pk").values_list("title", "severity__key", "status"))

    assert first == second


@pytest.mark.parametrize("count", ["-1", "0"])
def test_it_refuses_a_count_below_one_and_creates_nothing(count: str) -> None:
    with pytest.raises(CommandError, match="--incidents must be at least 1"):
        seed("--incidents", count)

    assert not Incident.objects.exists()
    assert not TimelineEvent.objects.exists()
    assert not get_user_model().objects.filter(username="demo").exists()
