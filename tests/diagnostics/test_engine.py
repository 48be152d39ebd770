"""The runbook engine: queue, claim once, run, stream output, record results and
evidence, retry what may pass, time out, reap runs whose worker died."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, RunStatus
from diagnostics.tasks import run_check
from incidents.models import EventKind
from tests import factories
from tests.diagnostics.conftest import TOKEN, step

pytestmark = pytest.mark.django_db


@pytest.fixture
def db_incident(responder, testbook, api_target):
    return factories.declare(actor=responder, category="database", title="Slow checkout queries")


def run_now(run: CheckRun) -> CheckRun:
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    return run


def events(incident, kind):
    return list(incident.timeline.filter(kind=kind).order_by("id"))


def test_a_check_is_queued_run_once_and_its_result_lands_on_the_timeline(db_incident, responder):
    (run,) = services.request_check(db_incident, step("diag"), actor=responder)
    assert run.status == RunStatus.QUEUED and run.target_name == "lotolink-api"
    assert (
        "ana ran test.diag (Echo check) on lotolink-api"
        in events(db_incident, EventKind.CHECK_RUN)[0].message
    )
    run = run_now(run)
    assert run.status == RunStatus.SUCCEEDED and run.outcome == "ok"
    assert run.output == "line 0\nline 1\nline 2\n"
    assert run.attempts == 1 and run.started_at and run.finished_at
    # A second delivery of the same task finds nothing to do.
    assert run_check.apply(args=(run.pk,)).get() == "not queued: already taken or finished"
    results = events(db_incident, EventKind.CHECK_RESULT)
    assert len(results) == 1
    assert results[0].message == "test.diag on lotolink-api: 3 lines"
    assert results[0].data["outcome"] == "ok"


def test_evidence_lights_up_the_recommended_action(db_incident, responder, rf):
    from diagnostics.views import runbook_context

    run_now(services.request_check(db_incident, step("diag"), actor=responder)[0])  # no evidence
    request = rf.get("/")
    request.user = responder
    assert not _recommended(runbook_context(request, db_incident))
    diag = step("diag")
    diag.params = {"evidence": ["long_running_queries"]}
    diag.save()
    run_now(services.request_check(db_incident, diag, actor=responder)[0])
    context = runbook_context(request, db_incident)
    assert _recommended(context) == {"test.act": ["long_running_queries"]}
    assert context["evidence"]["long_running_queries"]["details"] == {"pids": [4121, 4188]}


def _recommended(context) -> dict[str, list[str]]:
    return {
        item["step"].key: item["because"]
        for book in context["runbooks"]
        for item in book["steps"]
        if item["recommended"]
    }


def test_a_step_whose_probe_is_to_come_cannot_run(db_incident, responder):
    with pytest.raises(services.CheckError, match="not available yet"):
        services.request_check(db_incident, step("soon"), actor=responder)
    assert not CheckRun.objects.exists()


def test_no_target_configured_is_a_clear_refusal(db_incident, responder, api_target):
    api_target.active = False
    api_target.save()
    with pytest.raises(services.CheckError, match=r"No HTTP endpoint .* target is configured"):
        services.request_check(db_incident, step("diag"), actor=responder)
    assert not CheckRun.objects.exists()


def test_a_malformed_parameter_is_refused_before_anything_runs(db_incident, responder):
    diag = step("diag")
    diag.params = {"lines": "three"}
    diag.save()
    with pytest.raises(services.CheckError, match="parameter lines must be a whole number"):
        services.request_check(db_incident, diag, actor=responder)
    diag.params = {"colour": "red"}
    diag.save()
    with pytest.raises(services.CheckError, match="unknown parameter"):
        services.request_check(db_incident, diag, actor=responder)
    assert not CheckRun.objects.exists()


def test_run_all_queues_every_available_diagnostic_at_once(db_incident, responder, testbook):
    runs = services.run_all_diagnostics(db_incident, testbook, actor=responder)
    assert sorted(r.step.key for r in runs) == ["test.diag", "test.other"]
    assert len({r.batch for r in runs}) == 1
    assert all(r.status == RunStatus.QUEUED for r in runs)
    skipped = events(db_incident, EventKind.CHECK_RUN)[-1]
    assert "skipped: test.soon (not available yet)" in skipped.message


def test_a_transient_error_is_retried_then_recorded_as_failed(db_incident, responder):
    diag = step("diag")
    diag.params = {"fail": "transient", "lines": 0}
    diag.save()
    run = run_now(services.request_check(db_incident, diag, actor=responder)[0])
    assert run.status == RunStatus.FAILED
    assert run.attempts == 4  # the first try and three retries
    assert run.summary == "server is starting up"
    messages = [e.message for e in events(db_incident, EventKind.CHECK_RESULT)]
    assert messages.count("test.diag on lotolink-api: server is starting up; retrying") == 3
    assert messages[-1] == "test.diag on lotolink-api failed: server is starting up"


@pytest.mark.parametrize(
    ("fail", "status", "summary"),
    [
        ("permanent", RunStatus.FAILED, "password authentication failed for user lotolink"),
        ("timeout", RunStatus.TIMED_OUT, "no answer within 30 s"),
        ("bug", RunStatus.FAILED, "KeyError: 'oops'"),
    ],
)
def test_failures_are_clear_results_never_a_run_left_running(
    db_incident, responder, fail, status, summary
):
    diag = step("diag")
    diag.params = {"fail": fail, "lines": 1}
    diag.save()
    (run,) = services.request_check(db_incident, diag, actor=responder)
    # A probe bug is re-raised for the worker's log, after being recorded.
    with contextlib.suppress(KeyError):
        run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert (run.status, run.outcome, run.summary, run.attempts) == (status, "error", summary, 1)
    assert run.output == "line 0\n"
    assert events(db_incident, EventKind.CHECK_RESULT)[-1].data["status"] == status


def test_an_action_shows_its_plan_and_records_who_confirmed_it(db_incident, responder, api_target):
    act = step("act")
    plan = services.plan_action(act, api_target, {"count": 3})
    assert plan == "restart 3 workers on lotolink-api"
    run = services.run_action(
        db_incident, act, actor=responder, target=api_target, params={"count": 3}, plan=plan
    )
    assert run.confirmed_by == responder and run.plan == plan
    audit = events(db_incident, EventKind.ACTION)[-1]
    assert audit.message == "ana confirmed test.act: restart 3 workers on lotolink-api"
    run = run_now(run)
    assert run.summary == "restarted 3 workers"
    assert events(db_incident, EventKind.CHECK_RESULT)[-1].data["kind"] == "action"


def test_actions_are_refused_on_a_closed_incident_and_diagnostics_cannot_be_confirmed(
    db_incident, responder, api_target
):
    from incidents import services as incident_services
    from incidents.models import Status

    with pytest.raises(services.CheckError, match="is a diagnostic"):
        services.plan_action(step("diag"), api_target, {})
    with pytest.raises(services.CheckError, match="confirm it first"):
        services.request_check(db_incident, step("act"), actor=responder)
    incident_services.acknowledge_incident(db_incident, actor=responder)
    incident_services.transition_incident(db_incident, Status.RESOLVED, actor=responder)
    with pytest.raises(services.CheckError, match="not open"):
        services.run_action(
            db_incident, step("act"), actor=responder, target=api_target, params={}, plan="x"
        )
    assert not CheckRun.objects.exists()


def test_a_run_whose_worker_died_is_retried_then_failed(db_incident, responder, settings):
    settings.CHECK_RUN_GRACE = 10
    (run,) = services.request_check(db_incident, step("diag"), actor=responder)
    assert services.claim(run.pk, "worker@dead")
    stale = timezone.now() + timedelta(seconds=run.step.timeout_seconds + 11)
    assert services.reap_stale_runs(timezone.now()) == []  # still within its time
    assert services.reap_stale_runs(stale) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert (
        "worker worker@dead lost mid-run; retrying"
        in events(db_incident, EventKind.CHECK_RESULT)[-1].message
    )
    assert services.claim(run.pk, "worker@dead-again")  # the retry is taken ... and lost too
    assert services.reap_stale_runs(stale + timedelta(minutes=5)) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 2
    assert events(db_incident, EventKind.CHECK_RESULT)[-1].message.endswith(
        "failed: worker worker@dead-again lost mid-run"
    )


def test_an_action_whose_worker_died_is_never_retried(db_incident, responder, api_target):
    run = services.run_action(
        db_incident, step("act"), actor=responder, target=api_target, params={}, plan="p"
    )
    services.claim(run.pk, "worker@dead")
    services.reap_stale_runs(timezone.now() + timedelta(hours=1))
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 1


def test_known_secrets_never_reach_output_results_timeline_pages_or_logs(
    db_incident, responder, caplog, client, rf
):
    diag = step("diag")
    diag.params = {"leak_secret": True, "lines": 1}
    diag.save()
    run = run_now(services.request_check(db_incident, diag, actor=responder)[0])
    assert run.status == RunStatus.SUCCEEDED
    assert "connecting with token •••" in run.output
    stored = json.dumps(
        [
            run.output,
            run.summary,
            run.result,
            run.evidence,
            *db_incident.timeline.values_list("message", "data"),
        ]
    )
    assert TOKEN not in stored
    assert TOKEN not in caplog.text
    client.force_login(responder)
    assert TOKEN not in client.get(db_incident.get_absolute_url()).content.decode()
    download = client.get(f"/incidents/{db_incident.pk}/runs/{run.pk}/output.txt")
    assert download.status_code == 200 and TOKEN not in download.content.decode()
    from incidents.views.stream import StreamRenderer

    request = rf.get("/")
    request.user = responder
    messages, _ = StreamRenderer(request, db_incident.pk)(0)
    assert messages and TOKEN not in json.dumps(messages)


def test_output_is_capped_on_the_page_and_downloadable_whole(db_incident, responder, client):
    diag = step("diag")
    diag.params = {"lines": 1, "big_output": services.OUTPUT_PAGE_CAP + 5000}
    diag.save()
    run = run_now(services.request_check(db_incident, diag, actor=responder)[0])
    client.force_login(responder)
    page = client.get(db_incident.get_absolute_url()).content.decode()
    assert f"/incidents/{db_incident.pk}/runs/{run.pk}/output.txt" in page
    assert "Output cut to the last" in page
    download = client.get(f"/incidents/{db_incident.pk}/runs/{run.pk}/output.txt")
    assert download["Content-Disposition"].startswith("attachment;")
    assert download.content.decode() == run.output
    assert len(download.content) > services.OUTPUT_PAGE_CAP + 5000


# Every step id of ../shared/spec/runbook-steps.md (checked against it when present).
SPEC_STEP_IDS = {
    "init.health",
    "init.error_rate",
    "init.latency",
    "init.queue_depth",
    "init.db_connections",
    "init.recent_deploys",
    "init.payments_status",
    "api.pods",
    "api.logs",
    "api.top",
    "api.db_connectivity",
    "api.redis_ping",
    "api.scale",
    "api.restart",
    "api.db_connection_count",
    "api.kill_idle_connections",
    "api.rollback",
    "api.rollout_status",
    "db.active_queries",
    "db.locks",
    "db.slow_queries",
    "db.disk",
    "db.terminate_query",
    "db.vacuum",
    "pay.stripe_health",
    "pay.webhook_status",
    "pay.pending_plays",
    "pay.queues",
    "pay.retry_webhooks",
    "pay.webhook_logs",
    "pay.reconcile",
    "banca.health",
    "banca.request_logs",
    "banca.signature_logs",
    "banca.hmac_match",
    "sec.block_ip",
    "sec.rotate_secrets",
    "sec.export_logs",
    "sec.db_snapshot",
    "ref.get_all",
    "ref.describe_pod",
    "ref.events",
    "ref.logs_tail",
    "ref.logs_follow",
    "ref.logs_all_pods",
    "ref.replication",
    "ref.table_sizes",
    "ref.prom_targets",
    "ref.prom_query",
}


def test_the_seeded_runbook_has_every_step_of_the_spec(runbook):
    import re
    from pathlib import Path

    from diagnostics.seed import seed_runbooks

    spec = Path(__file__).resolve().parents[3] / "shared/spec/runbook-steps.md"
    if spec.exists():
        assert set(re.findall(r"^\| `([a-z_.]+)`", spec.read_text(), re.M)) == SPEC_STEP_IDS
    seed_runbooks()
    assert len(SPEC_STEP_IDS) == 49
    assert set(RunbookStep.objects.values_list("key", flat=True)) >= SPEC_STEP_IDS
    assert seed_runbooks() == {"runbooks": 0, "steps": 0}
    for step_ in RunbookStep.objects.all():
        step_.full_clean()  # probe, target kind and params agree where the probe exists


def test_interactive_commands_are_shown_to_copy_never_run(runbook, responder, client, api_target):
    from diagnostics.seed import seed_runbooks

    seed_runbooks()
    incident = factories.declare(actor=responder, category="database", title="Need a shell")
    for key in ("ref.shell", "ref.psql"):
        manual = RunbookStep.objects.get(key=key)
        assert manual.kind == "manual" and not manual.available
        with pytest.raises(services.CheckError, match="is run by hand: copy its command"):
            services.request_check(incident, manual, actor=responder)
    client.force_login(responder)
    page = client.get(f"/incidents/{incident.pk}/?procedure=reference").content.decode()
    assert "kubectl exec -it -n lotolink deployment/postgres -- psql -U lotolink" in page
    assert "Copy command" in page
    assert not CheckRun.objects.exists()
