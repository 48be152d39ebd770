"""The runbook panel's buttons: who may press them, what HTMX and plain requests
get back, and the review-then-confirm path of an action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core import signing
from django.utils import timezone
from guardian.shortcuts import assign_perm

from diagnostics.actions import SIGNING_SALT as ACTION_SIGNING_SALT
from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.tasks import run_check
from incidents.models import EventKind
from tests import factories
from tests.diagnostics.conftest import step

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def db_incident(responder, testbook, api_target):
    # P2: its actions need no second person's approval (P0/P1 ones do: test_approvals)
    return factories.declare(
        actor=responder, category="database", title="Slow checkout queries", severity="P2"
    )


@pytest.fixture
def operator(responder):
    """A responder who may also run actions."""
    responder.user_permissions.add(Permission.objects.get(codename="run_actions"))
    return type(responder).objects.get(pk=responder.pk)


@pytest.fixture
def no_actions(responder):
    """The Responders group as an admin may have left it: without run_actions."""
    Group.objects.get(name="Responders").permissions.remove(
        Permission.objects.get(codename="run_actions")
    )
    return type(responder).objects.get(pk=responder.pk)


NEEDS_PERMISSION = "You need the “run actions” permission (incidents.run_actions) to run this"


def base(incident) -> str:
    return f"/incidents/{incident.pk}"


def test_the_incident_page_shows_the_runbook_for_its_category(client, db_incident, responder):
    client.force_login(responder)
    page = client.get(base(db_incident) + "/").content.decode()
    assert 'id="runbook"' in page
    assert "Test procedure" in page and "Run all diagnostics" in page
    assert "not available yet" in page  # test.soon: its probe is to come
    assert "Review…" in page  # the seeded Responders run actions


def test_an_action_step_says_why_its_button_is_missing(client, db_incident, no_actions):
    client.force_login(no_actions)
    page = client.get(base(db_incident) + "/").content.decode()
    assert "Review…" not in page
    assert NEEDS_PERMISSION in page and "ask an incident commander" in page


def test_run_a_step_by_htmx_and_by_plain_post(client, db_incident, responder):
    client.force_login(responder)
    response = client.post(base(db_incident) + "/steps/test.diag/run/", **HX)
    assert response.status_code == 200 and b'id="runbook"' in response.content
    assert b"queued" in response.content
    CheckRun.objects.update(
        status=RunStatus.SUCCEEDED, queued_at=timezone.now() - timedelta(seconds=3)
    )
    response = client.post(base(db_incident) + "/steps/test.diag/run/")
    assert response.status_code == 302
    assert CheckRun.objects.filter(step__key="test.diag").count() == 2


def test_a_double_click_on_run_queues_one_run(client, db_incident, responder, other_responder):
    client.force_login(responder)
    url = base(db_incident) + "/steps/test.diag/run/"
    assert client.post(url, **HX).status_code == 200
    run = CheckRun.objects.get()
    assert client.post(url, **HX).status_code == 200  # while it is queued
    CheckRun.objects.update(status=RunStatus.SUCCEEDED)
    assert client.post(url).status_code == 302  # finished, but within 2 s
    assert list(CheckRun.objects.all()) == [run]
    assert db_incident.timeline.filter(kind=EventKind.CHECK_RUN).count() == 1
    # Someone else asking, or the same person asking again later, runs it again.
    client.force_login(other_responder)
    assert client.post(url, **HX).status_code == 200
    assert CheckRun.objects.filter(requested_by=other_responder).count() == 1
    client.force_login(responder)
    CheckRun.objects.update(queued_at=timezone.now() - timedelta(seconds=3))
    client.post(url, **HX)
    assert CheckRun.objects.filter(requested_by=responder).count() == 2


def test_run_all_from_the_page(client, db_incident, responder):
    client.force_login(responder)
    response = client.post(base(db_incident) + "/runbooks/testbook/run-all/", **HX)
    assert response.status_code == 200
    assert CheckRun.objects.count() == 2


def test_bad_requests_are_clear_and_change_nothing(client, db_incident, responder):
    client.force_login(responder)
    soon = client.post(base(db_incident) + "/steps/test.soon/run/", **HX)
    assert soon.status_code == 422 and b"not available yet" in soon.content
    assert client.post(base(db_incident) + "/steps/no.such/run/").status_code == 404
    assert client.get(base(db_incident) + "/steps/test.diag/run/").status_code == 405
    act = client.post(base(db_incident) + "/steps/test.act/run/", **HX)
    assert act.status_code == 422 and b"confirm it first" in act.content
    assert not CheckRun.objects.exists()


def test_a_viewer_and_an_outsider_cannot_run_anything(
    client, db_incident, viewer, other_responder, responder
):
    client.force_login(viewer)
    assert client.post(base(db_incident) + "/steps/test.diag/run/").status_code == 403
    secret = factories.declare(actor=responder, category="security", title="Leak")
    client.force_login(other_responder)
    assert client.post(base(secret) + "/steps/test.diag/run/").status_code == 404
    assert client.get(base(secret) + "/steps/test.act/action/").status_code == 404
    assert not CheckRun.objects.exists()


def test_an_action_needs_the_run_actions_permission(client, db_incident, no_actions):
    client.force_login(no_actions)
    response = client.get(base(db_incident) + "/steps/test.act/action/", **HX)
    assert response.status_code == 422 and NEEDS_PERMISSION in response.content.decode()
    assign_perm("incidents.run_actions", no_actions, db_incident)  # granted on this incident only
    assert client.get(base(db_incident) + "/steps/test.act/action/", **HX).status_code == 200


def test_review_then_confirm_an_action(client, db_incident, operator, api_target):
    client.force_login(operator)
    url = base(db_incident) + "/steps/test.act/action/"
    form = client.get(url)
    assert form.status_code == 200 and b"Show exactly what it will do" in form.content
    review = client.post(url, {"stage": "review", "target": api_target.pk}, **HX)
    assert b"This will <strong>restart 7 workers on lotolink-api</strong>" in review.content
    assert not CheckRun.objects.exists()  # reviewing changes nothing
    token = review.context["token"]
    confirm = client.post(url, {"stage": "confirm", "token": token}, **HX)
    assert confirm.status_code == 200 and b'id="runbook"' in confirm.content
    run = CheckRun.objects.get()
    assert (run.plan, run.confirmed_by, run.status) == (
        "restart 7 workers on lotolink-api",
        operator,
        RunStatus.QUEUED,
    )
    assert db_incident.timeline.filter(kind=EventKind.ACTION).count() == 1
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert run.summary == "restarted 7 workers"


@pytest.mark.parametrize("tamper", ["garbage", "other-incident", "other-step"])
def test_a_forged_confirmation_is_refused(
    client, db_incident, operator, api_target, responder, tamper
):
    client.force_login(operator)
    payload = {
        "target": api_target.pk,
        "params": {},
        "plan": "restart 7 workers",
        "incident": db_incident.pk,
        "step": "test.act",
    }
    if tamper == "other-incident":
        payload["incident"] = factories.declare(actor=responder, title="Other").pk
    if tamper == "other-step":
        payload["step"] = "test.diag"
    token = "garbage" if tamper == "garbage" else signing.dumps(payload, salt=ACTION_SIGNING_SALT)
    response = client.post(
        base(db_incident) + "/steps/test.act/action/", {"stage": "confirm", "token": token}, **HX
    )
    assert response.status_code == 422
    assert not CheckRun.objects.exists()


def test_an_expired_confirmation_is_refused(client, db_incident, operator, api_target, monkeypatch):
    client.force_login(operator)
    url = base(db_incident) + "/steps/test.act/action/"
    token = client.post(url, {"stage": "review", "target": api_target.pk}).context["token"]
    import time as time_module

    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 3600)
    response = client.post(url, {"stage": "confirm", "token": token}, follow=True)
    assert b"confirmation expired" in response.content
    assert not CheckRun.objects.exists()


def test_terminate_query_offers_only_pids_a_diagnostic_found(
    client, db_incident, operator, monkeypatch
):
    """db.terminate_query's pid is picked from db.slow_queries' evidence, never typed."""
    monkeypatch.setenv("LOTOOPS_TARGET_LOTOLINK_DB_PASSWORD", "x")
    Target.objects.create(
        name="lotolink-db", kind="postgres", url="postgres://postgres@127.0.0.1:1/x"
    )
    from diagnostics.seed import seed_runbooks

    seed_runbooks()
    db_incident.check_runs.create(
        step=RunbookStep.objects.get(key="db.slow_queries"),
        status=RunStatus.SUCCEEDED,
        outcome="warning",
        evidence={
            "long_running_queries": {
                "pids": [4121],
                "queries": [{"pid": 4121, "seconds": 412, "query": "SELECT pg_sleep(600)"}],
            }
        },
    )
    client.force_login(operator)
    url = base(db_incident) + "/steps/db.terminate_query/action/"
    form = client.get(url)
    assert form.status_code == 200
    content = form.content.decode()
    assert "pid 4121 (412 s): SELECT pg_sleep(600)" in content
    target = Target.objects.get(name="lotolink-db")
    bad = client.post(url, {"stage": "review", "target": target.pk, "pid": "999"})
    assert bad.status_code == 422 and b"Select a valid choice" in bad.content
    assert not CheckRun.objects.filter(step__key="db.terminate_query").exists()


def test_output_download_follows_incident_access(client, db_incident, responder, other_responder):
    secret = factories.declare(actor=responder, category="security", title="Leak")
    run = secret.check_runs.create(step=step("diag"), output="hello")
    client.force_login(other_responder)
    assert client.get(f"{base(secret)}/runs/{run.pk}/output.txt").status_code == 404
    assert client.get(f"{base(db_incident)}/runs/{run.pk}/output.txt").status_code == 404
    client.force_login(responder)
    assert client.get(f"{base(secret)}/runs/{run.pk}/output.txt").content == b"hello"


@pytest.fixture
def admin_client(client, runbook):
    user = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/diagnostics/target/",
        "/admin/diagnostics/target/add/",
        "/admin/diagnostics/runbook/",
        "/admin/diagnostics/runbookstep/?kind__exact=action&q=postgres",
        "/admin/diagnostics/checkrun/?status__exact=failed",
    ],
)
def test_admins_maintain_runbooks_and_targets(admin_client, path):
    from diagnostics.seed import seed_runbooks

    seed_runbooks()
    assert admin_client.get(path).status_code == 200


def test_a_target_url_with_a_password_is_refused_in_admin(admin_client):
    response = admin_client.post(
        "/admin/diagnostics/target/add/",
        {
            "name": "lotolink-db",
            "kind": "postgres",
            "url": "postgres://lotolink:hunter2@db:5432/x",
            "secret_env": "",
            "options": "{}",
            "active": "on",
        },
    )
    assert response.status_code == 200
    assert b"Do not put a password in the URL" in response.content
    assert not Target.objects.exists()
    ok = admin_client.post(
        "/admin/diagnostics/target/add/",
        {
            "name": "lotolink-db",
            "kind": "postgres",
            "url": "postgres://lotolink@db:5432/x",
            "secret_env": "LOTOOPS_TARGET_LOTOLINK_DB_PASSWORD",
            "options": "{}",
            "active": "on",
        },
    )
    assert ok.status_code == 302
    assert Target.objects.get().secret_env == "LOTOOPS_TARGET_LOTOLINK_DB_PASSWORD"


def test_a_step_with_a_malformed_parameter_is_refused_in_admin(admin_client):
    from diagnostics.seed import seed_runbooks

    seed_runbooks()
    step_ = RunbookStep.objects.get(key="db.slow_queries")
    response = admin_client.post(
        f"/admin/diagnostics/runbookstep/{step_.pk}/change/",
        {
            "runbook": step_.runbook_id,
            "key": step_.key,
            "title": step_.title,
            "kind": step_.kind,
            "probe": step_.probe,
            "target_kind": step_.target_kind,
            "params": '{"min_seconds": "soon"}',
            "finds": "[]",
            "recommended_by": "[]",
            "command": "",
            "timeout_seconds": 30,
            "order": 1,
        },
    )
    assert response.status_code == 200
    assert b"min_seconds must be a number" in response.content
    step_.refresh_from_db()
    assert step_.params == {"min_seconds": 300}
