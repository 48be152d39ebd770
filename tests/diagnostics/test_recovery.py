"""Verified recovery with the real probes against local peers: the plays of a fixture
PostgreSQL database (pg_helpers: 3 plays pending for over an hour), the local Stripe
(localstripe + stripe_peer.py) for failed webhook deliveries, the machine's RabbitMQ for
queue depths. "Mark resolved" runs the payment procedure's recovery checks through the
engine; the incident resolves only when they pass twice; the watch after resolution
reopens it once, even with two beats and two workers at the same time; a commander may
override with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import amqp
import psycopg
import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from diagnostics import recovery
from diagnostics.models import (
    CheckRun,
    RecoveryState,
    RecoveryVerification,
    Runbook,
    RunbookStep,
    Target,
)
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check, start_recovery_round
from incidents import audit, services
from incidents.models import Category, EventKind, Incident, Status
from tests import factories
from tests.conftest import TEST_QUEUE
from tests.diagnostics import k8s_server as k8s
from tests.diagnostics import pg_helpers as pg
from tests.diagnostics import worker as worker_helpers
from tests.diagnostics.prometheus_server import (  # noqa: F401  (session fixture)
    ERROR_RATIO_QUERY,
    prometheus_server_fixture,
)
from tests.diagnostics.test_probes_rabbitmq import SECRET_ENV as AMQP_ENV
from tests.diagnostics.test_probes_rabbitmq import connect as amqp_connect
from tests.diagnostics.test_probes_stripe import (  # noqa: F401  (session fixture)
    API_KEY,
    KEY_ENV,
    StripePeer,
    stripe_peer_server,
)

ROOT = Path(__file__).resolve().parents[2]
K8S_TOKEN = "k8s-recovery-token-5e1f"
RACE_SETTLE = 3.0  # seconds for racers let go at once to reach the incident's lock
pytestmark = [pytest.mark.postgres]


# --- the platform around the incident ---------------------------------------------------


@pytest.fixture
def plays() -> None:
    """The fixture platform database: 3 plays pending for over an hour (stuck)."""
    if not pg.reachable():
        from tests.conftest import _missing

        _missing("these tests need PostgreSQL on 127.0.0.1:5432")
    pg.create_scratch_db()


def fix_the_plays() -> None:
    pg.query("UPDATE plays SET status = 'paid' WHERE status = 'pending'", url=pg.DB_URL)


def break_the_plays() -> None:
    pg.query(
        "INSERT INTO plays (status, created_at) VALUES ('pending', now() - interval '2 hours')",
        url=pg.DB_URL,
    )


@pytest.fixture
def queues() -> Iterator[list[str]]:
    """Fresh, empty RabbitMQ queues for pay.queues to read (all under their limit)."""
    try:
        conn = amqp_connect()
    except (OSError, amqp.exceptions.AMQPError) as exc:
        from tests.conftest import _missing

        _missing(f"these tests need RabbitMQ on 127.0.0.1:5672 ({exc!r})")
    names = [f"lotoops-recovery-{uuid.uuid4().hex[:10]}-{n}" for n in ("plays", "confirmations")]
    channel = conn.channel()
    for name in names:
        channel.queue_declare(name, durable=False, auto_delete=False)
    try:
        yield names
    finally:
        for name in names:
            channel.queue_delete(name)
        conn.close()


@pytest.fixture
def payment_peers(queues, stripe_peer_server, monkeypatch) -> StripePeer:  # noqa: F811
    """The seeded runbook (payments names pay.pending_plays, pay.webhook_status and
    pay.queues as its recovery checks) pointed at the local Stripe and RabbitMQ; the
    platform's database target is the caller's (`platform` below: the scratch plays;
    the browser walk: the money-at-risk platform database, which serves both
    pay.pending_plays and pay.money_at_risk)."""
    stripe_peer_server.flush()
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv(AMQP_ENV, "guest")
    seed_runbooks()
    RunbookStep.objects.filter(key="pay.queues").update(
        params={"queues": queues, "warning_depth": 100}
    )
    Target.objects.create(
        name="stripe", kind="stripe", url=stripe_peer_server.url, secret_env=KEY_ENV
    )
    Target.objects.create(
        name="lotolink-rabbitmq",
        kind="rabbitmq",
        url="amqp://guest@127.0.0.1:5672/",
        secret_env=AMQP_ENV,
    )
    return stripe_peer_server


@pytest.fixture
def platform(plays, payment_peers) -> StripePeer:
    """The local peers and the scratch plays (pg_helpers: 3 stuck over an hour)."""
    Target.objects.create(name="lotolink-db", kind="postgres", url=pg.DB_URL)
    return payment_peers


@pytest.fixture
def commander(runbook):
    user = factories.UserFactory(username="carla")
    user.groups.add(Group.objects.get(name="Incident commanders"))
    return user


@pytest.fixture
def mitigated(responder):
    incident = factories.declare(actor=responder, category=Category.PAYMENT)
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.MITIGATED, actor=responder)
    return incident


def verification(incident: Incident) -> RecoveryVerification:
    found = recovery.latest_verification(incident)
    assert found is not None
    return found


def run_round(v: RecoveryVerification, label: str) -> list[CheckRun]:
    """The worker's side: run the round's queued check runs with the real task."""
    runs = list(CheckRun.objects.filter(batch=f"recovery-{v.pk}-{label}").order_by("id"))
    assert runs, f"no runs in round {label}"
    for run in runs:
        run_check.apply(args=(run.pk,))
        run.refresh_from_db()
    return runs


def events(incident: Incident, kind: str) -> list[str]:
    return list(
        incident.timeline.filter(kind=kind).order_by("seq").values_list("message", flat=True)
    )


def resolve_verified(incident: Incident, actor) -> RecoveryVerification:
    """Mark resolved with healthy checks: two passing rounds, the second when due."""
    services.transition_incident(incident, Status.RESOLVED, actor=actor)
    v = verification(incident)
    run_round(v, "1")
    v.refresh_from_db()
    assert v.next_round_at is not None, v.failures
    assert recovery.start_round(v.pk, 2, now=v.next_round_at)
    run_round(v, "2")
    incident.refresh_from_db()
    v.refresh_from_db()
    return v


# --- verifying before resolving ------------------------------------------------------------


@pytest.mark.django_db
def test_resolving_while_plays_are_stuck_is_refused_with_the_evidence_then_two_passes_resolve(
    platform, mitigated, responder, client
):
    held = services.transition_incident(mitigated, Status.RESOLVED, actor=responder)

    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED and mitigated.resolved_at is None
    assert held.kind == EventKind.RECOVERY
    assert "pay.pending_plays, pay.webhook_status, pay.queues must pass twice" in held.message
    v = verification(mitigated)
    assert v.state == RecoveryState.VERIFYING
    # The checks are ordinary check runs, queued through the engine, on the timeline.
    assert "ana ran pay.pending_plays" in " ".join(events(mitigated, EventKind.CHECK_RUN))

    runs = run_round(v, "1")

    v.refresh_from_db()
    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED
    assert v.state == RecoveryState.FAILED
    [failure] = v.failures
    stuck = next(r for r in runs if r.step.key == "pay.pending_plays")
    assert failure["step"] == "pay.pending_plays" and failure["run"] == stuck.pk
    assert failure["evidence"] == {"plays_stuck": {"count": 3, "threshold": 1}}
    refused = events(mitigated, EventKind.RECOVERY)[-1]
    assert refused.startswith("Recovery not verified (round 1 of 2): pay.pending_plays on ")
    assert "3 plays pending over 1 hour (threshold 1)" in refused
    assert f"(check run #{stuck.pk})" in refused and "stays mitigated" in refused
    # The page shows the failing evidence beside the button that verifies again.
    client.force_login(responder)
    page = client.get(mitigated.get_absolute_url()).content.decode()
    card = page[page.index('id="recovery"') :]
    card = card[: card.index("</section>")]
    assert "Not resolved: recovery checks failed." in card
    assert "3 plays pending over 1 hour (threshold 1)" in card and "plays_stuck" in card
    assert "Verify again and resolve" in card
    assert "Resolve anyway" not in card  # a responder may not override

    fix_the_plays()
    services.transition_incident(mitigated, Status.RESOLVED, actor=responder)
    v = verification(mitigated)
    first = run_round(v, "1")
    v.refresh_from_db()
    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED  # one pass is not enough
    assert v.state == RecoveryState.VERIFYING and v.next_round_at is not None
    # The countdown task (RECOVERY_INTERVAL is 120 s here): not due yet, then due, once.
    assert start_recovery_round.apply(args=(v.pk, 2)).get() == "not due or taken"
    assert not recovery.start_round(v.pk, 2, now=v.next_round_at - timedelta(seconds=1))
    assert recovery.start_round(v.pk, 2, now=v.next_round_at)
    assert not recovery.start_round(v.pk, 2, now=v.next_round_at)  # once
    assert start_recovery_round.apply(args=(v.pk, 2)).get() == "not due or taken"
    second = run_round(v, "2")

    mitigated.refresh_from_db()
    v.refresh_from_db()
    assert mitigated.status == Status.RESOLVED
    assert v.state == RecoveryState.RESOLVED and v.resolved_at == mitigated.resolved_at
    assert v.watch_until is not None and v.next_watch_at is not None
    assert {r.step.key for r in first} == {r.step.key for r in second} == set(v.checks)
    assert all((r.status, r.outcome) == ("succeeded", "ok") for r in [*first, *second])
    messages = events(mitigated, EventKind.RECOVERY)
    assert messages[-2].startswith("Recovery checks passed (round 1 of 2)")
    assert messages[-1].startswith("Recovery verified: every check passed 2 times")
    assert events(mitigated, EventKind.STATUS)[-1] == (
        "ana moved the incident from mitigated to resolved: recovery verified"
    )


@pytest.mark.django_db
def test_a_second_mark_resolved_while_verifying_is_refused_and_changes_nothing(
    platform, mitigated, responder
):
    services.transition_incident(mitigated, Status.RESOLVED, actor=responder)
    before = mitigated.timeline.count()

    with pytest.raises(services.IncidentError, match="already being verified"):
        services.transition_incident(mitigated, Status.RESOLVED, actor=responder)

    assert mitigated.timeline.count() == before
    assert RecoveryVerification.objects.filter(incident=mitigated).count() == 1


@pytest.mark.django_db
def test_a_recovery_check_that_cannot_run_refuses_the_resolution_and_writes_nothing(
    platform, mitigated, responder
):
    Target.objects.filter(kind="stripe").delete()
    before = mitigated.timeline.count()

    with pytest.raises(services.IncidentError, match=r"Recovery check pay\.webhook_status cannot"):
        services.transition_incident(mitigated, Status.RESOLVED, actor=responder)

    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED and mitigated.timeline.count() == before
    assert not RecoveryVerification.objects.exists() and not CheckRun.objects.exists()


@pytest.mark.django_db
def test_an_incident_without_recovery_checks_resolves_at_once(platform, responder):
    incident = factories.declare(actor=responder, category=Category.OTHER)
    services.acknowledge_incident(incident, actor=responder)

    services.transition_incident(incident, Status.RESOLVED, actor=responder)

    incident.refresh_from_db()
    assert incident.status == Status.RESOLVED
    assert not RecoveryVerification.objects.exists() and not CheckRun.objects.exists()


# --- override ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_commander_overrides_with_a_reason_and_it_is_audited(
    platform, mitigated, responder, commander
):
    services.transition_incident(mitigated, Status.RESOLVED, actor=responder)
    run_round(verification(mitigated), "1")  # fails: plays stuck

    with pytest.raises(services.IncidentError, match="Say why"):
        recovery.override_resolution(mitigated, actor=commander, reason="  ")
    with pytest.raises(services.IncidentError, match="Only an incident commander"):
        recovery.override_resolution(mitigated, actor=responder, reason="Finance says fine")
    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED

    recovery.override_resolution(
        mitigated, actor=commander, reason="The 3 plays are test plays from QA"
    )

    mitigated.refresh_from_db()
    assert mitigated.status == Status.RESOLVED
    v = verification(mitigated)
    assert v.state == RecoveryState.OVERRIDDEN and v.reason == "The 3 plays are test plays from QA"
    assert v.watch_until is None  # an overridden resolution is not watched
    override = events(mitigated, EventKind.RECOVERY)[-1]
    assert override.startswith(
        "carla resolved without verified recovery (override): The 3 plays are test plays from QA"
    )
    assert "pay.pending_plays on lotolink-db failing: 3 plays pending" in override
    assert events(mitigated, EventKind.STATUS)[-1].endswith(
        "to resolved: override: The 3 plays are test plays from QA"
    )
    manager = factories.UserFactory(username="mona")
    manager.groups.add(Group.objects.get(name="Managers"))
    now = timezone.now()
    lines = audit.trail(manager, now - timedelta(hours=1), now + timedelta(minutes=1))
    [line] = [x for x in lines if "without verified recovery (override)" in x.summary]
    assert (line.who, line.incident_id) == ("carla", mitigated.pk)


@pytest.mark.django_db
def test_the_override_button_needs_the_permission_and_a_reason(
    platform, mitigated, responder, commander, client
):
    url = f"/incidents/{mitigated.pk}/recovery/override/"
    client.force_login(responder)
    refused = client.post(url, {"reason": "I say so"}, follow=True)
    client.force_login(commander)
    blank = client.post(url, {"reason": ""}, HTTP_HX_REQUEST="true")
    mitigated.refresh_from_db()
    assert mitigated.status == Status.MITIGATED
    assert "You may not resolve without verified recovery" in refused.content.decode()
    assert blank.status_code == 422 and "Say why" in blank.content.decode()

    done = client.post(
        url, {"reason": "Stripe confirmed recovery by phone"}, HTTP_HX_REQUEST="true"
    )

    mitigated.refresh_from_db()
    assert done.status_code == 200 and mitigated.status == Status.RESOLVED
    assert "Resolved without verified recovery" in done.content.decode()


# --- the API and the alerts --------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_resolves_through_the_same_rule(platform, mitigated, responder, commander, client):
    from api import tokens

    def headers(user):
        return {"Authorization": f"Bearer {tokens.issue(user, 'test')[1]}"}

    url = f"/api/v1/incidents/{mitigated.pk}/transition"
    held = client.post(url, {"status": "resolved"}, "application/json", headers=headers(responder))
    again = client.post(url, {"status": "resolved"}, "application/json", headers=headers(responder))
    denied = client.post(
        url,
        {"status": "resolved", "override_reason": "trust me"},
        "application/json",
        headers=headers(responder),
    )

    off_resolve = client.post(
        url,
        {"status": "investigating", "override_reason": "x"},
        "application/json",
        headers=headers(commander),
    )

    assert (
        off_resolve.status_code == 409
        and "only with status resolved" in off_resolve.json()["detail"]
    )
    assert held.status_code == 202 and held.json()["status"] == "mitigated"
    assert again.status_code == 409 and "already being verified" in again.json()["detail"]
    assert denied.status_code == 403
    assert verification(mitigated).state == RecoveryState.VERIFYING

    overridden = client.post(
        url,
        {"status": "resolved", "override_reason": "Known QA plays"},
        "application/json",
        headers=headers(commander),
    )
    assert overridden.status_code == 200 and overridden.json()["status"] == "resolved"
    states = set(RecoveryVerification.objects.values_list("state", flat=True))
    assert states == {RecoveryState.CANCELLED, RecoveryState.OVERRIDDEN}


# --- admin -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_refuses_recovery_checks_that_do_not_exist_or_are_actions(runbook, admin_client):
    seed_runbooks()
    payments = Runbook.objects.get(key="payments")
    assert payments.recovery_checks == ["pay.pending_plays", "pay.webhook_status", "pay.queues"]
    assert Runbook.objects.get(key="api").recovery_checks == ["api.pods", "init.error_rate"]
    for bad, why in [
        (["pay.pending_playz"], "pay.pending_playz: no such step"),
        (["pay.reconcile"], "must be a diagnostic, not action"),
        ("pay.pending_plays", "Give a list of step keys"),
        (["pay.queues", "pay.queues"], "Name each check once"),
    ]:
        payments.recovery_checks = bad
        with pytest.raises(ValidationError, match=why):
            payments.full_clean()

    url = f"/admin/diagnostics/runbook/{payments.pk}/change/"
    form = {
        "key": "payments",
        "title": payments.title,
        "section": "4",
        "categories": '["payment"]',
        "symptoms": "",
        "order": payments.order,
        "recovery_checks": '["pay.nope"]',
        "steps-TOTAL_FORMS": "0",
        "steps-INITIAL_FORMS": "0",
    }
    answer = admin_client.post(url, form)
    assert answer.status_code == 200 and "pay.nope: no such step" in answer.content.decode()
    payments.refresh_from_db()
    assert payments.recovery_checks == ["pay.pending_plays", "pay.webhook_status", "pay.queues"]

    step = RunbookStep.objects.get(key="pay.queues")
    step.kind = "action"
    with pytest.raises(ValidationError, match="is a recovery check of Payment processing"):
        step.full_clean()


# --- the watch after resolution ----------------------------------------------------------


def race(incident: Incident, *commands: tuple[str, str]) -> list[dict]:
    """Start one process per (mode, arg), wait until every one is up, hold the
    incident's row lock (as a slow transaction elsewhere would) while they all start
    at once and reach it, then release it and collect their answers."""
    env = {
        **os.environ,
        "DATABASE_URL": worker_helpers.test_database_url(),
        "CELERY_DEFAULT_QUEUE": TEST_QUEUE,
        "PYTHONUNBUFFERED": "1",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.diagnostics.recovery_race", mode, arg],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode, arg in commands
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
        with psycopg.connect(worker_helpers.test_database_url()) as conn:
            conn.execute(
                "SELECT id FROM incidents_incident WHERE id = %s FOR UPDATE", [incident.pk]
            )
            for process in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            time.sleep(RACE_SETTLE)
            conn.commit()
        answers = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=90)
            assert process.returncode == 0, stderr[-3000:]
            answers.append(json.loads(stdout.strip().splitlines()[-1]))
        return answers
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


@pytest.mark.django_db(transaction=True)
def test_a_failure_within_the_watch_reopens_once_under_concurrent_beats_and_workers(
    platform, mitigated, responder
):
    fix_the_plays()
    v = resolve_verified(mitigated, responder)
    assert mitigated.status == Status.RESOLVED and v.state == RecoveryState.RESOLVED
    due = v.next_watch_at

    # Nothing is due before its time; a passing watch round changes nothing.
    assert recovery.start_due_watches(now=due - timedelta(seconds=1)) == []
    assert recovery.start_due_watches(now=due) == [v.pk]
    run_round(v, "w1")
    mitigated.refresh_from_db()
    assert mitigated.status == Status.RESOLVED

    # The plays get stuck again. Two beats sweep at the same moment: one round starts.
    break_the_plays()
    v.refresh_from_db()
    sweeps = race(mitigated, *[("sweep", v.next_watch_at.isoformat())] * 2)
    assert sorted(len(a["started"]) for a in sweeps) == [0, 1], sweeps
    # A later sweep (the next round falls due) starts a second round before the
    # first one ran: two failing rounds, run by two workers at once.
    v.refresh_from_db()
    assert recovery.start_due_watches(now=v.next_watch_at) == [v.pk]
    runs = list(
        CheckRun.objects.filter(batch__in=[f"recovery-{v.pk}-w2", f"recovery-{v.pk}-w3"])
        .order_by("id")
        .values_list("pk", flat=True)
    )
    assert len(runs) == 6
    ids = ",".join(map(str, runs))
    backwards = ",".join(map(str, reversed(runs)))
    race(mitigated, ("runs", ids), ("runs", backwards))

    mitigated.refresh_from_db()
    v.refresh_from_db()
    assert mitigated.status == Status.INVESTIGATING
    reopened = events(mitigated, EventKind.REOPENED)
    assert len(reopened) == 1, reopened
    assert reopened[0].startswith(
        "LotoOps reopened the incident: a recovery check failed within 24h 00m of the resolution: "
        "pay.pending_plays on lotolink-db failing: 1 plays pending over 1 hour"
    )
    assert v.state == RecoveryState.REOPENED and v.watch_until is None
    assert v.failures[0]["evidence"] == {"plays_stuck": {"count": 1, "threshold": 1}}
    assert CheckRun.objects.filter(pk__in=runs, status="succeeded").count() == 6  # each once
    # The watch is over: no later sweep runs the checks again.
    assert recovery.start_due_watches(now=timezone.now() + timedelta(hours=2)) == []


# --- the backend procedure: pods ready, error rate under its threshold ----------------------


@pytest.fixture
def kube():
    server = k8s.KubeServer(token=K8S_TOKEN).start()
    yield server
    server.stop()


@pytest.mark.django_db
def test_a_backend_outage_resolves_once_pods_are_ready_and_the_error_rate_is_low(
    runbook, responder, kube, prometheus_server, monkeypatch
):
    monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", K8S_TOKEN)
    seed_runbooks()
    # The seeded query's 5-minute window, shortened to the test Prometheus' scrapes.
    step = RunbookStep.objects.get(key="init.error_rate")
    step.params = step.params | {"query": ERROR_RATIO_QUERY}
    step.save()
    Target.objects.create(
        name="lotolink-k8s", kind="kubernetes", url=kube.url, secret_env="LOTOOPS_TARGET_K8S_TOKEN"
    )
    Target.objects.create(name="prometheus", kind="prometheus", url=prometheus_server.url)
    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-a"))
    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-b", statuses=[k8s.crash_loop_status(7)]))
    prometheus_server.set_error_ratio(0.2)
    incident = factories.declare(actor=responder, category=Category.SERVICE_OUTAGE)
    services.acknowledge_incident(incident, actor=responder)

    services.transition_incident(incident, Status.RESOLVED, actor=responder)
    run_round(verification(incident), "1")

    v = verification(incident)
    incident.refresh_from_db()
    assert v.checks == ["api.pods", "init.error_rate"]
    assert incident.status == Status.ACKNOWLEDGED and v.state == RecoveryState.FAILED
    failing = {f["step"]: f for f in v.failures}
    assert set(failing) == {"api.pods", "init.error_rate"}
    assert "crash_looping" in failing["api.pods"]["evidence"]
    assert failing["init.error_rate"]["outcome"] == "failing"

    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-b"))  # the rollout replaced it: ready
    prometheus_server.set_error_ratio(0.0)
    v = resolve_verified(incident, responder)

    assert incident.status == Status.RESOLVED and v.state == RecoveryState.RESOLVED
