"""Action items: owners, due dates, status; lists per incident and across incidents;
verification by re-running a runbook check that really runs."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnostics import verification
from diagnostics.models import Runbook, RunbookStep, RunStatus, Target
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from incidents.models import ActionItem, ActionItemStatus, EventKind
from incidents.postincident import actionitems
from incidents.services import IncidentError
from tests.incidents.helpers import lived

pytestmark = pytest.mark.django_db


def add_url(incident):
    return reverse("incidents:action_item_add", args=[incident.pk])


def test_adding_an_item_with_owner_and_due_date_lists_it_in_place(
    client, responder, other_responder
):
    incident = lived(responder)
    client.force_login(responder)
    response = client.post(
        add_url(incident),
        {"text": "Raise the pool size", "owner": other_responder.pk, "due_date": "2026-03-09"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card pm-section" id="action-items">')
    assert "Raise the pool size" in html
    item = ActionItem.objects.get()
    assert (item.owner, item.due_date, item.status) == (other_responder, date(2026, 3, 9), "open")
    assert incident.timeline.filter(message__contains="added action item").exists()


def test_an_empty_item_is_refused(client, responder):
    incident = lived(responder)
    client.force_login(responder)
    response = client.post(add_url(incident), {"text": "  "}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert not ActionItem.objects.exists()


def test_status_owner_and_due_date_change(client, responder, other_responder):
    incident = lived(responder)
    item = ActionItem.objects.create(incident=incident, text="Add an alert")
    client.force_login(responder)
    url = reverse("incidents:action_item", args=[incident.pk, item.pk])
    response = client.post(
        url,
        {"status": "in_progress", "owner": responder.pk, "due_date": "2026-04-01"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert 'id="action-item-' in response.content.decode()
    item.refresh_from_db()
    assert (item.status, item.owner, item.due_date) == ("in_progress", responder, date(2026, 4, 1))
    event = incident.timeline.filter(data__action_item=item.pk).last()
    assert "status in progress" in event.message and "owner ana" in event.message


def test_my_action_items_and_the_overdue_ones(client, responder, other_responder, viewer):
    incident = lived(responder)
    hidden = lived(responder, category="security", title="Leaked key")
    today = timezone.localdate()
    mine_late = ActionItem.objects.create(
        incident=incident, text="Mine, late", owner=other_responder,
        due_date=today - timedelta(days=1),
    )  # fmt: skip
    ActionItem.objects.create(
        incident=incident, text="Mine, later", owner=other_responder,
        due_date=today + timedelta(days=5),
    )  # fmt: skip
    ActionItem.objects.create(
        incident=incident, text="Ana's, late", owner=responder, due_date=today - timedelta(days=3)
    )
    ActionItem.objects.create(
        incident=incident, text="Mine, done", owner=other_responder,
        due_date=today - timedelta(days=9), status=ActionItemStatus.DONE,
    )  # fmt: skip
    ActionItem.objects.create(
        incident=hidden, text="Secret item", owner=other_responder,
        due_date=today - timedelta(days=1),
    )  # fmt: skip
    client.force_login(other_responder)
    url = reverse("incidents:action_items")

    def texts(params):
        html = client.get(url, params).content.decode()
        names = ["Mine, late", "Mine, later", "Ana's, late", "Mine, done", "Secret item"]
        return {t for t in names if t in html.replace("&#x27;", "'")}

    assert texts({"mine": "1"}) == {"Mine, late", "Mine, later", "Mine, done"}
    assert texts({"mine": "1", "overdue": "1"}) == {"Mine, late"}
    assert texts({"overdue": "1"}) == {"Mine, late", "Ana's, late"}
    assert mine_late.is_overdue()
    dashboard = client.get("/").content.decode()
    assert "Action item: Mine, late" in dashboard


# --- verification by a runbook check ---------------------------------------------------


@pytest.fixture
def db_step(runbook):
    seed_runbooks()
    # These incidents resolve at once, as incidents of a procedure without recovery
    # checks do: verified recovery has its own tests (tests/diagnostics/test_recovery.py).
    Runbook.objects.update(recovery_checks=[])
    return RunbookStep.objects.get(key="api.db_connectivity")


def postgres_target(url: str) -> Target:
    Target.objects.filter(kind="postgres").update(active=False)
    return Target.objects.create(name="lotolink-db", kind="postgres", url=url)


@pytest.mark.postgres
def test_verify_reruns_the_check_and_marks_the_item_verified_when_it_passes(
    client, responder, db_step
):
    postgres_target("postgres://postgres@127.0.0.1:5432/postgres")
    incident = lived(responder)
    item = actionitems.add_action_item(
        incident, text="Raise max_connections", owner=responder, due_date=None, step=db_step,
        actor=responder,
    )  # fmt: skip
    client.force_login(responder)
    response = client.post(
        reverse("diagnostics:action_item_verify", args=[incident.pk, item.pk]),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    item.refresh_from_db()
    run = item.verification_run
    assert run is not None and item.status == ActionItemStatus.OPEN
    assert "every 2s" in response.content.decode()  # the row polls while the check runs
    assert run_check.apply(args=(run.pk,)).get() == "ok"
    item.refresh_from_db()
    assert item.status == ActionItemStatus.VERIFIED and item.verified_at is not None
    event = incident.timeline.filter(data__action_item=item.pk, data__verified=True).get()
    assert f"check run #{run.pk}" in event.message
    assert "api.db_connectivity on lotolink-db" in event.message
    assert "passed: SELECT 1 in" in event.message
    # Run twice, one effect: the task finds the run taken, nothing changes.
    assert run_check.apply(args=(run.pk,)).get().startswith("not queued")
    assert incident.timeline.filter(data__action_item=item.pk, data__verified=True).count() == 1


@pytest.mark.postgres
def test_a_failing_check_leaves_the_item_unverified_with_the_reason(responder, db_step):
    postgres_target("postgres://postgres@127.0.0.1:1/postgres")
    incident = lived(responder)
    item = actionitems.add_action_item(
        incident, text="Fix the pooler", owner=None, due_date=None, step=db_step, actor=responder
    )
    run = verification.verify_action_item(item, actor=responder)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert run.status in (RunStatus.FAILED, RunStatus.QUEUED)
    if run.status == RunStatus.QUEUED:  # a transient connection error: retried, then fails
        for _ in range(4):
            run_check.apply(args=(run.pk,))
        run.refresh_from_db()
    item.refresh_from_db()
    assert item.status == ActionItemStatus.OPEN
    event = incident.timeline.filter(data__action_item=item.pk, data__verified=False).last()
    assert event is not None
    assert "not verified" in event.message and run.summary[:30] in event.message


def test_an_item_tied_to_a_check_cannot_be_marked_verified_by_hand(responder, db_step):
    incident = lived(responder)
    item = actionitems.add_action_item(
        incident, text="x", owner=None, due_date=None, step=db_step, actor=responder
    )
    with pytest.raises(IncidentError, match="use Verify"):
        actionitems.update_action_item(
            item, status=ActionItemStatus.VERIFIED, owner=None, due_date=None, actor=responder
        )


def test_an_action_step_cannot_verify_an_item(responder, db_step):
    incident = lived(responder)
    action = RunbookStep.objects.filter(kind="action").first()
    with pytest.raises(IncidentError, match="changes the platform"):
        actionitems.add_action_item(
            incident, text="x", owner=None, due_date=None, step=action, actor=responder
        )


def test_verifying_without_a_check_is_refused(client, responder):
    incident = lived(responder)
    item = ActionItem.objects.create(incident=incident, text="Write docs")
    client.force_login(responder)
    response = client.post(
        reverse("diagnostics:action_item_verify", args=[incident.pk, item.pk]),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    assert "no check" in response.content.decode()
    assert EventKind.NOTE  # nothing else happened
    assert not incident.check_runs.exists()


def test_verified_by_hand_without_a_check_is_refused_and_not_offered(client, responder):
    """An item with no check is closed by hand as Done; "Verified" stays what a
    passing check earned."""
    incident = lived(responder)
    item = ActionItem.objects.create(incident=incident, text="Write docs")
    events = incident.timeline.count()
    client.force_login(responder)
    url = reverse("incidents:action_item", args=[incident.pk, item.pk])
    response = client.post(url, {"status": "verified"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert "Only a passing check can mark an item Verified" in response.content.decode()
    assert "mark it Done (closed by hand)" in response.content.decode()
    item.refresh_from_db()
    assert (item.status, item.verified_at) == ("open", None)
    assert incident.timeline.count() == events
    # The form offers Done, not Verified.
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert '<option value="done"' in html and '<option value="verified"' not in html
    response = client.post(url, {"status": "done"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    item.refresh_from_db()
    assert item.status == "done"


@pytest.mark.parametrize(
    ("due", "message"),
    [
        ("1900-01-01", "Due date 1900-01-01 is before the incident was declared (2026-03-02)"),
        ("2026-03-01", "before the incident was declared"),
        ("9999-12-31", "Due date 9999-12-31 is more than 5 years away"),
    ],
)
def test_a_due_date_long_past_or_absurdly_far_is_refused(client, responder, due, message):
    incident = lived(responder)
    client.force_login(responder)
    response = client.post(
        add_url(incident), {"text": "Add an alert", "due_date": due}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not ActionItem.objects.exists()
    item = ActionItem.objects.create(incident=incident, text="Add an alert")
    events = incident.timeline.count()
    url = reverse("incidents:action_item", args=[incident.pk, item.pk])
    response = client.post(url, {"status": "open", "due_date": due}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert message in response.content.decode()
    item.refresh_from_db()
    assert item.due_date is None and incident.timeline.count() == events
    with pytest.raises(IncidentError, match="Due date"):
        actionitems.add_action_item(
            incident, text="x", owner=None, due_date=date.fromisoformat(due), actor=responder
        )


def test_due_dates_from_the_declaration_to_five_years_ahead_are_accepted(responder):
    incident = lived(responder)
    earliest, latest = actionitems.due_date_range(incident)
    assert earliest == date(2026, 3, 2)
    for day in (earliest, timezone.localdate(), latest):
        item = actionitems.add_action_item(
            incident, text=f"due {day}", owner=None, due_date=day, actor=responder
        )
        assert item.due_date == day
    assert latest - timezone.localdate() >= timedelta(days=5 * 365)
