"""A second person for dangerous actions: on P0/P1 incidents (and steps marked
`requires_approval`) a confirmed action waits for someone else with the approve
permission; approving queues exactly the requested plan, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from guardian.shortcuts import assign_perm

from diagnostics import approvals
from diagnostics.models import ActionApproval, ApprovalStatus, CheckRun, RunStatus
from diagnostics.tasks import expire_approvals, run_check
from incidents.models import EventKind
from tests import factories
from tests.diagnostics.conftest import step

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
PLAN = "restart 7 workers on lotolink-api"


def _with(user, *perms):
    """`user` with these global permissions ("run_actions", "diagnostics.approve_actions")."""
    for perm in perms:
        app, _, codename = perm.rpartition(".")
        found = Permission.objects.filter(codename=codename)
        user.user_permissions.add(found.get(content_type__app_label=app) if app else found.get())
    return type(user).objects.get(pk=user.pk)


@pytest.fixture
def requester(responder):
    return _with(responder, "run_actions")


@pytest.fixture
def approver(runbook):
    from django.contrib.auth.models import Group

    user = factories.UserFactory(username="ida")
    user.groups.add(Group.objects.get(name="Responders"))
    return _with(user, "diagnostics.approve_actions")


@pytest.fixture
def p1(responder, testbook, api_target):
    return factories.declare(actor=responder, category="database", severity="P1")


def url(incident, tail: str) -> str:
    return f"/incidents/{incident.pk}/{tail}"


def ask(client, user, incident, api_target) -> ActionApproval:
    """`user` reviews test.act and confirms it: a request, nothing queued."""
    client.force_login(user)
    action = url(incident, "steps/test.act/action/")
    review = client.post(action, {"stage": "review", "target": api_target.pk})
    assert b"Ask for approval: restart workers" in review.content
    asked = client.post(action, {"stage": "confirm", "token": review.context["token"]}, **HX)
    assert asked.status_code == 200
    assert "Awaiting approval" in asked.content.decode()
    assert not CheckRun.objects.exists()
    return ActionApproval.objects.get()


def test_an_action_on_a_p1_incident_runs_only_once_another_person_approves(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    assert (approval.plan, approval.status, approval.requested_by) == (
        PLAN,
        ApprovalStatus.PENDING,
        requester,
    )
    client.force_login(approver)
    page = client.get(url(p1, "")).content.decode()
    assert "Awaiting approval" in page and f"this will <strong>{PLAN}</strong>" in page
    assert url(p1, f"approvals/{approval.pk}/approve/") in page

    approved = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert approved.status_code == 200
    run = CheckRun.objects.get()
    assert (run.plan, run.requested_by, run.confirmed_by, run.status) == (
        PLAN,
        requester,
        approver,
        RunStatus.QUEUED,
    )
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.run) == (
        ApprovalStatus.APPROVED,
        approver,
        run,
    )
    messages = list(p1.timeline.filter(kind=EventKind.ACTION).values_list("message", flat=True))
    assert messages[0].startswith("ana asked for approval to run test.act: " + PLAN)
    assert any(m.startswith(f"ida approved request #{approval.pk} by ana") for m in messages)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert run.summary == "restarted 7 workers"


def test_an_approval_is_used_once(client, p1, requester, approver, api_target):
    approval = ask(client, requester, p1, api_target)
    client.force_login(approver)
    client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    run = CheckRun.objects.get()
    replay = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert replay.status_code == 422
    assert (
        f"Request #{approval.pk} was already approved by ida: the action ran as check run "
        f"#{run.pk}." in replay.content.decode()
    )
    assert CheckRun.objects.count() == 1


def test_the_confirmation_behind_a_request_cannot_be_replayed(client, p1, requester, api_target):
    client.force_login(requester)
    action = url(p1, "steps/test.act/action/")
    token = client.post(action, {"stage": "review", "target": api_target.pk}).context["token"]
    client.post(action, {"stage": "confirm", "token": token}, **HX)
    again = client.post(action, {"stage": "confirm", "token": token}, **HX)
    assert again.status_code == 422 and b"This confirmation was already used" in again.content
    assert ActionApproval.objects.count() == 1


def test_the_requester_cannot_approve_their_own_request(client, p1, requester, api_target):
    boss = _with(requester, "diagnostics.approve_actions")
    approval = ask(client, boss, p1, api_target)
    page = client.get(url(p1, "")).content.decode()
    assert url(p1, f"approvals/{approval.pk}/approve/") not in page
    assert "Another person with the approve permission must approve it." in page
    refused = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert refused.status_code == 422
    assert b"You asked for this action: another person must approve it." in refused.content
    superuser = type(boss).objects.get(pk=boss.pk)
    superuser.is_superuser = True
    superuser.save()
    assert client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX).status_code == 422
    assert not CheckRun.objects.exists()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_approval_by_someone_without_the_permission_is_refused(
    client, p1, requester, other_responder, api_target
):
    approval = ask(client, requester, p1, api_target)
    client.force_login(other_responder)
    page = client.get(url(p1, "")).content.decode()
    assert "Awaiting approval" in page
    assert url(p1, f"approvals/{approval.pk}/approve/") not in page
    for decision in ("approve", "reject"):
        refused = client.post(url(p1, f"approvals/{approval.pk}/{decision}/"), **HX)
        assert refused.status_code == 422
        assert b"You may not approve actions on this incident." in refused.content
    assert client.get(url(p1, f"approvals/{approval.pk}/approve/")).status_code == 405
    assert not CheckRun.objects.exists()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_the_approve_permission_can_be_granted_on_one_incident(
    client, p1, requester, other_responder, api_target, testbook
):
    approval = ask(client, requester, p1, api_target)
    elsewhere = factories.declare(actor=requester, category="database", title="Elsewhere")
    assign_perm("incidents.approve_actions", other_responder, p1)
    assert approvals.can_approve(other_responder, p1)
    assert not approvals.can_approve(other_responder, elsewhere)
    client.force_login(other_responder)
    assert client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX).status_code == 200
    assert CheckRun.objects.get().confirmed_by == other_responder


def test_an_approval_on_another_incident_or_a_hidden_one_is_not_found(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    other = factories.declare(actor=requester, title="Other")
    client.force_login(approver)
    assert client.post(url(other, f"approvals/{approval.pk}/approve/")).status_code == 404
    hidden = factories.declare(actor=requester, category="security", title="Leak")
    assert client.post(url(hidden, f"approvals/{approval.pk}/approve/")).status_code == 404
    assert not CheckRun.objects.exists()


def test_a_rejected_request_never_runs(client, p1, requester, approver, api_target):
    approval = ask(client, requester, p1, api_target)
    client.force_login(approver)
    rejected = client.post(
        url(p1, f"approvals/{approval.pk}/reject/"), {"reason": "not during checkout peak"}, **HX
    )
    assert rejected.status_code == 200 and "Awaiting approval" not in rejected.content.decode()
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.reason) == (
        ApprovalStatus.REJECTED,
        approver,
        "not during checkout peak",
    )
    assert p1.timeline.filter(message__contains="rejected request").exists()
    late = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert late.status_code == 422 and b"was already rejected by ida" in late.content
    assert not CheckRun.objects.exists()


def test_an_expired_request_never_runs(client, p1, requester, approver, api_target, settings):
    approval = ask(client, requester, p1, api_target)
    assert approval.expires_at == approval.requested_at + timedelta(
        seconds=settings.ACTION_APPROVAL_MAX_AGE
    )
    ActionApproval.objects.filter(pk=approval.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    client.force_login(approver)
    assert "Awaiting approval" not in client.get(url(p1, "")).content.decode()
    late = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert late.status_code == 422 and b"expired: it will not run" in late.content
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    assert not CheckRun.objects.exists()
    assert p1.timeline.filter(message__contains="expired without a decision").count() == 1


def test_expiring_requests_twice_records_each_once(client, p1, requester, api_target):
    approval = ask(client, requester, p1, api_target)
    ActionApproval.objects.filter(pk=approval.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    expire_approvals.apply()
    expire_approvals.apply()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    assert p1.timeline.filter(message__contains="expired without a decision").count() == 1


def test_a_step_an_admin_marks_needs_approval_on_any_incident(
    client, responder, requester, testbook, api_target
):
    p2 = factories.declare(actor=responder, category="database", severity="P2")
    assert not approvals.required(p2, step("act"))
    type(step("act")).objects.filter(key="test.act").update(requires_approval=True)
    ask(client, requester, p2, api_target)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_approvers_pressing_approve_at_once_queue_one_run(
    p1, requester, approver, other_responder, api_target
):
    import threading

    from django.db import connection

    from diagnostics import actions

    second = _with(other_responder, "diagnostics.approve_actions")
    review = actions.review(p1, step("act"), api_target, {})
    approval = approvals.request_approval(p1, step("act"), review.token, actor=requester)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def press(user) -> None:
        try:
            barrier.wait(timeout=5)
            approvals.approve(ActionApproval.objects.get(pk=approval.pk), actor=user)
            outcomes[user.username] = "approved"
        except approvals.services.CheckError as exc:
            outcomes[user.username] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=press, args=(u,)) for u in (approver, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes.values()).count("approved") == 1, outcomes
    run = CheckRun.objects.get()
    winner = next(name for name, said in outcomes.items() if said == "approved")
    loser = next(said for said in outcomes.values() if said != "approved")
    assert loser == (
        f"Request #{approval.pk} was already approved by {winner}: "
        f"the action ran as check run #{run.pk}."
    )


def test_live_streams_share_the_runbook_panel_only_between_viewers_who_see_it_alike(
    client, p1, requester, approver, api_target
):
    """The live stream draws a panel once per viewer class: the requester (told someone
    else must decide) and an approver (shown Approve) must never share a drawing, while
    two approvers still do."""
    from incidents.views.stream import Viewer

    other_approver = _with(factories.UserFactory(username="olga"), "diagnostics.approve_actions")
    other_approver.groups.add(*approver.groups.all())
    # All three may work the incident and run actions: only approving tells them apart.
    approver = _with(approver, "run_actions")
    other_approver = _with(other_approver, "run_actions")
    ask(client, requester, p1, api_target)
    classes = {u.username: Viewer.of(u, p1) for u in (requester, approver, other_approver)}
    assert classes["ana"] != classes["ida"]
    assert classes["ida"] == classes["olga"]


# --- lowering the severity for a moment (issue 20, hole 3) ----------------------------


def severity(client, incident, key: str) -> None:
    from incidents.models import Severity

    answer = client.post(
        url(incident, "severity/"),
        {"severity": Severity.objects.get(key=key).pk, "reason": f"re-rated {key}"},
    )
    assert answer.status_code == 302
    incident.refresh_from_db()
    assert incident.severity.key == key


def test_lowering_the_severity_for_a_moment_does_not_skip_the_second_person(
    client, p1, requester, api_target
):
    """The hole: P1 → P2, review, confirm ("Confirmed and queued"), P2 → P1. The
    incident was P1 since its declaration: confirming only asks for approval."""
    client.force_login(requester)
    severity(client, p1, "P2")
    approval = ask(client, requester, p1, api_target)
    severity(client, p1, "P1")
    assert approval.status == ApprovalStatus.PENDING and not CheckRun.objects.exists()
    # ...and the requester cannot approve it themselves, whatever they hold.
    boss = _with(requester, "diagnostics.approve_actions")
    client.force_login(boss)
    own = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert own.status_code == 422
    assert b"You asked for this action: another person must approve it." in own.content
    assert not CheckRun.objects.exists()


def test_a_p2_incident_that_never_was_p0_or_p1_needs_no_approval(
    client, responder, requester, testbook, api_target
):
    p2 = factories.declare(actor=responder, category="database", severity="P2")
    client.force_login(requester)
    severity(client, p2, "P3")
    assert not approvals.required(p2, step("act"))
    assert approvals.severities_held(p2) == {"P2", "P3"}


def test_an_incident_raised_to_p1_and_lowered_again_still_needs_approval(
    client, responder, requester, testbook, api_target
):
    p2 = factories.declare(actor=responder, category="database", severity="P2")
    client.force_login(requester)
    severity(client, p2, "P1")
    severity(client, p2, "P3")
    assert approvals.required(p2, step("act"))
    ask(client, requester, p2, api_target)


def test_a_severity_raised_between_review_and_confirm_is_seen_at_confirm(
    client, responder, requester, other_responder, testbook, api_target
):
    p2 = factories.declare(actor=responder, category="database", severity="P2")
    client.force_login(requester)
    action = url(p2, "steps/test.act/action/")
    review = client.post(action, {"stage": "review", "target": api_target.pk})
    assert b"Confirm: restart workers" in review.content  # P2: no approval, as shown then
    client.force_login(other_responder)
    severity(client, p2, "P1")
    client.force_login(requester)
    asked = client.post(action, {"stage": "confirm", "token": review.context["token"]}, **HX)
    assert asked.status_code == 200 and "Awaiting approval" in asked.content.decode()
    assert ActionApproval.objects.get().status == ApprovalStatus.PENDING
    assert not CheckRun.objects.exists()


def test_the_window_setting_lets_a_severity_left_long_ago_stop_counting(
    client, p1, requester, settings
):
    client.force_login(requester)
    severity(client, p1, "P2")
    settings.ACTION_APPROVAL_SEVERITY_WINDOW = 3600
    later = timezone.now() + timedelta(hours=2)
    assert approvals.required(p1, step("act"))  # left P1 a moment ago: inside the window
    assert approvals.severities_held(p1, now=later) == {"P2"}
    assert not approvals.required(p1, step("act"), now=later)
    settings.ACTION_APPROVAL_SEVERITY_WINDOW = 0  # the default: since declaration
    assert approvals.required(p1, step("act"), now=later + timedelta(days=30))


# --- what the approver sees is what runs ----------------------------------------------


def test_a_request_whose_target_changed_is_void_and_never_runs(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    api_target.url = "http://10.9.9.9/health"  # an admin repoints the target
    api_target.save()
    client.force_login(approver)
    page = client.get(url(p1, "")).content.decode()
    assert "Void: the target lotolink-api changed (secret_env, url) since it was asked" in page
    assert url(p1, f"approvals/{approval.pk}/approve/") not in page
    refused = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert refused.status_code == 422
    assert (
        f"Request #{approval.pk} is void: the target lotolink-api changed (secret_env, url) "
        "since it was asked, so it will not run." in refused.content.decode()
    )
    assert not CheckRun.objects.exists()
    approval.refresh_from_db()
    assert (approval.status, approval.reason) == (
        ApprovalStatus.VOID,
        "the target lotolink-api changed (secret_env, url)",
    )
    assert (
        p1.timeline.filter(message__contains=f"Request #{approval.pk} by ana")
        .filter(message__contains="is void")
        .exists()
    )
    again = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert again.status_code == 422 and b"is void" in again.content
    assert not CheckRun.objects.exists()


def test_a_request_whose_step_now_runs_another_probe_is_void(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    type(step("act")).objects.filter(key="test.act").update(probe="test.echo")
    client.force_login(approver)
    refused = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert refused.status_code == 422
    assert b"the step test.act changed (probe)" in refused.content
    assert not CheckRun.objects.exists()


def test_a_request_edited_after_it_was_asked_is_void(client, p1, requester, approver, api_target):
    """The approver is shown the plan and parameters stored with the request: a row
    changed behind the page (the database, a script) no longer matches its signature."""
    approval = ask(client, requester, p1, api_target)
    ActionApproval.objects.filter(pk=approval.pk).update(params={"count": 700})
    client.force_login(approver)
    refused = client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX)
    assert refused.status_code == 422
    assert b"the request&#x27;s plan or parameters changed" in refused.content
    assert not CheckRun.objects.exists()


def test_an_unchanged_request_binds_the_step_and_target_it_was_asked_for(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    assert approval.binding == {
        "step": {"key": "test.act", "kind": "action", "probe": "test.restart"},
        "target": {
            "name": "lotolink-api",
            "kind": "http",
            "url": "http://127.0.0.1:1/health",
            "secret_env": "LOTOOPS_TARGET_TEST_TOKEN",
            "options": {},
        },
    }
    assert len(approval.signature) == 64 and approvals.changes(approval) == ""
    client.force_login(approver)
    assert client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX).status_code == 200
    assert CheckRun.objects.get().plan == PLAN


def test_an_approved_action_whose_target_changed_before_a_worker_took_it_does_not_run(
    client, p1, requester, approver, api_target
):
    approval = ask(client, requester, p1, api_target)
    client.force_login(approver)
    assert client.post(url(p1, f"approvals/{approval.pk}/approve/"), **HX).status_code == 200
    run = CheckRun.objects.get()
    api_target.url = "http://10.9.9.9/health"
    api_target.save()
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.summary == (
        "refused: the target lotolink-api changed (secret_env, url) "
        f"since request #{approval.pk} was approved"
    )


def test_a_reviewed_action_whose_step_or_target_changed_before_confirming_is_refused(
    client, responder, requester, testbook, api_target
):
    p2 = factories.declare(actor=responder, category="database", severity="P2")
    client.force_login(requester)
    action = url(p2, "steps/test.act/action/")
    for edit in ("target", "step"):
        token = client.post(action, {"stage": "review", "target": api_target.pk}).context["token"]
        if edit == "target":
            api_target.options = {"namespace": "elsewhere"}
            api_target.save()
        else:
            # Another action probe (any registered one: the view checks availability).
            type(step("act")).objects.filter(key="test.act").update(probe="stripe.retry_webhooks")
        refused = client.post(action, {"stage": "confirm", "token": token}, **HX)
        assert refused.status_code == 422
        assert (
            b"The action&#x27;s step or target changed since you reviewed it: review it again."
            in refused.content
        )
        assert not CheckRun.objects.exists() and not ActionApproval.objects.exists()
