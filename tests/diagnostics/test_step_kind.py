"""A step's kind follows its probe: an action probe never runs as a diagnostic,
whether an admin tries to save such a step, a row is written around the admin, or
the step is edited after a diagnostic run was queued."""

from __future__ import annotations

import time

import pytest

from diagnostics.models import CheckRun, RunbookStep, RunStatus, StepKind, Target
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from tests import factories
from tests.conftest import IN_CI
from tests.diagnostics import pg_helpers as pg

pytestmark = pytest.mark.django_db
KILL = "postgres.kill_idle_connections"

if not pg.reachable():
    reason = f"these tests need PostgreSQL at {pg.HOST}:{pg.PORT} (superuser postgres, trust)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture
def platform_db(runbook):
    """The platform's database (the scratch one) with an idle session in it."""
    pg.create_scratch_db()
    seed_runbooks()
    Target.objects.create(name="lotolink-db", kind="postgres", url=pg.DB_URL)
    sessions = pg.Sessions()
    idle = sessions.idle(app="pg-probe-test-idle").info.backend_pid
    time.sleep(0.3)
    yield idle
    sessions.close()


def test_an_admin_cannot_give_a_diagnostic_step_an_action_probe(client, platform_db):
    client.force_login(factories.UserFactory(username="root", is_staff=True, is_superuser=True))
    locks = RunbookStep.objects.get(key="db.locks")
    response = client.post(
        f"/admin/diagnostics/runbookstep/{locks.pk}/change/",
        {
            "runbook": locks.runbook_id,
            "key": locks.key,
            "title": locks.title,
            "kind": "diagnostic",
            "probe": KILL,
            "target_kind": "postgres",
            "params": '{"idle_minutes": 0}',
            "finds": [],
            "recommended_by": [],
            "command": "",
            "timeout_seconds": 30,
            "order": 1,
        },
    )
    assert response.status_code == 200
    assert b"changes the platform: only an action step may use it" in response.content
    locks.refresh_from_db()
    assert locks.probe == "postgres.locks"


def _smuggle(params: dict | None = None) -> RunbookStep:
    """Written around the admin (a migration, a shell, a bulk update)."""
    RunbookStep.objects.filter(key="db.locks").update(probe=KILL, params=params or {})
    return RunbookStep.objects.get(key="db.locks")


def test_run_refuses_a_diagnostic_step_carrying_an_action_probe(client, responder, platform_db):
    _smuggle({"idle_minutes": 0})
    incident = factories.declare(actor=responder, category="database")
    client.force_login(responder)
    response = client.post(f"/incidents/{incident.pk}/steps/db.locks/run/", HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert b"changes the platform" in response.content
    all_runs = client.post(f"/incidents/{incident.pk}/runbooks/database/run-all/")
    assert all_runs.status_code == 302
    assert not CheckRun.objects.filter(step__key="db.locks").exists()
    assert pg.alive(platform_db)


def test_a_step_edited_after_queueing_never_runs_the_action(responder, platform_db):
    from diagnostics import services

    incident = factories.declare(actor=responder, category="database")
    locks = RunbookStep.objects.get(key="db.locks")
    (run,) = services.request_check(incident, locks, actor=responder)
    _smuggle({"idle_minutes": 0})
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "changes the platform" in run.summary
    assert pg.alive(platform_db)


def test_an_action_step_needs_an_action_probe(runbook):
    seed_runbooks()
    step = RunbookStep.objects.get(key="db.locks")
    step.kind = StepKind.ACTION
    with pytest.raises(Exception, match="an action step needs an action probe"):
        step.full_clean()
