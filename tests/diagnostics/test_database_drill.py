"""The database drill, end to end on the machine's real PostgreSQL (a scratch
database as the target), through the engine and the incident page's review and
confirm path, with the seeded runbook's steps:

five sessions idle in transaction, a lock chain of three (A holds a row, B waits on
A while holding another row, C waits on B), and one long query (pg_sleep).

- db.slow_queries lists exactly the long query (not the idle-in-transaction
  sessions with their finished statements, not the lock waiters, not itself);
- db.locks names A as the root blocker and recommends terminating it, with its pid
  in the reviewed plan;
- db.idle_in_transaction is its own finding, recommending its own action;
- after the recommended actions ran, the checks run again (queued by each action's
  success) clear the findings: they are superseded (with the run that no longer
  found them), the steps are no longer recommended and no stale pid is offered; a
  responder's own re-run agrees.

Thresholds are one second so the drill takes a few seconds; every session it opens
is terminated at the end.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.db.models import F

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from diagnostics.views import runbook_context
from tests import factories
from tests.conftest import IN_CI
from tests.diagnostics import pg_helpers as pg

if not pg.reachable():
    reason = f"the drill needs PostgreSQL at {pg.HOST}:{pg.PORT} (superuser postgres, trust)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
IDLE_APP = "drill-idle"


@pytest.fixture
def sessions():
    opened = pg.Sessions()
    yield opened
    opened.close()


@pytest.fixture
def drill_incident(runbook, responder):
    pg.create_scratch_db()
    seed_runbooks()
    Target.objects.create(name="lotolink-db", kind="postgres", url=pg.DB_URL)
    for key in ("db.slow_queries", "db.idle_in_transaction", "db.terminate_idle_in_transaction"):
        RunbookStep.objects.filter(key=key).update(params={"min_seconds": 1})
    return factories.declare(
        actor=responder, category="database", title="Checkout hangs", severity="P2"
    )


def check(incident, key: str, actor) -> CheckRun:
    """Run a diagnostic as the page does (request, then the worker's task), a few
    seconds after any earlier request (a request within 2 s is a double click)."""
    CheckRun.objects.update(queued_at=F("queued_at") - timedelta(seconds=3))
    (run,) = services.request_check(incident, RunbookStep.objects.get(key=key), actor=actor)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.summary
    return run


def act(client, incident, key: str, **chosen) -> tuple[str, CheckRun]:
    """Review an action on the incident page, confirm its plan, let the worker run it."""
    url = f"/incidents/{incident.pk}/steps/{key}/action/"
    target = Target.objects.get()
    review = client.post(url, {"stage": "review", "target": target.pk, **chosen})
    assert review.status_code == 200, review.content.decode()[:2000]
    plan = review.context["plan"]
    confirmed = client.post(url, {"stage": "confirm", "token": review.context["token"]}, **HX)
    assert confirmed.status_code == 200, confirmed.content.decode()[:2000]
    run = CheckRun.objects.filter(step__key=key).latest("id")
    assert run.plan == plan
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    return plan, run


def panel(rf, incident, user) -> dict:
    request = rf.get("/")
    request.user = user
    return runbook_context(request, incident)


def step_row(context, key: str) -> dict:
    return next(
        row
        for book in context["runbooks"]
        if book["steps"]
        for row in book["steps"]
        if row["step"].key == key
    )


def test_the_database_drill(client, rf, drill_incident, responder, sessions):
    incident = drill_incident
    # Five sessions idle in an open transaction, their last statement long finished.
    idle = []
    for _ in range(5):
        conn = sessions.open(app=IDLE_APP, autocommit=False)
        conn.execute("SELECT count(*) FROM plays")
        idle.append(conn.info.backend_pid)
    # The lock chain: A holds row 1; B (one statement) locks row 2 then waits for row
    # 1; C waits for row 2.
    a = sessions.open(autocommit=False)
    a.execute("SELECT id FROM plays WHERE id = 1 FOR UPDATE")
    b = sessions.background(
        "DO $$ BEGIN PERFORM 1 FROM plays WHERE id = 2 FOR UPDATE;"
        " UPDATE plays SET note = 'b' WHERE id = 1; END $$"
    )
    pg.wait_until(lambda: (pg.activity(b.pid) or {}).get("wait_event_type") == "Lock", what="B")
    c = sessions.background("UPDATE plays SET note = 'c' WHERE id = 2")
    pg.wait_until(lambda: (pg.activity(c.pid) or {}).get("wait_event_type") == "Lock", what="C")
    # One long query.
    sleeper = sessions.background("SELECT pg_sleep(60) /* the long report */")
    pg.wait_until(
        lambda: ((pg.activity(sleeper.pid) or {}).get("seconds") or 0) > 1.1,
        what="pg_sleep to pass the 1 s threshold",
    )
    pg.wait_until(
        lambda: all(((pg.activity(p) or {}).get("seconds") or 0) > 1.1 for p in (b.pid, c.pid)),
        what="the lock waiters to pass the threshold too",
    )
    time.sleep(0.2)  # every idle-in-transaction session is past 1 s as well
    a_pid = a.info.backend_pid

    # The slow-query check: exactly the long query, its statement readable whole.
    slow = check(incident, "db.slow_queries", responder)
    assert slow.outcome == "failing"
    assert slow.evidence["long_running_queries"]["pids"] == [sleeper.pid]
    assert slow.result["lock_waits"] == 2 and slow.result["idle_in_transaction"] == 6
    assert slow.summary == f"1 query running longer than 1 s: pid {sleeper.pid}"
    assert "    SELECT pg_sleep(60) /* the long report */" in slow.output.splitlines()
    assert all(len(line) <= 100 for line in slow.output.splitlines())
    assert RunbookStep.objects.get(key="db.slow_queries").display_title == (
        "Queries running over 1 s"
    )

    # The lock check: A is the root of the chain and its termination is recommended.
    locks = check(incident, "db.locks", responder)
    assert locks.outcome == "failing"
    found = locks.evidence["lock_contention"]
    assert sorted(found["waiting_pids"]) == sorted([b.pid, c.pid])
    (root,) = found["root_blockers"]
    assert root["pid"] == a_pid and root["blocks"] == sorted([b.pid, c.pid])
    assert root["state"] == "idle in transaction"
    assert f"root blocker: pid {a_pid} (idle in transaction" in locks.summary

    # Idle in transaction: its own finding (the five, and A, which idles too).
    stuck = check(incident, "db.idle_in_transaction", responder)
    assert stuck.outcome == "failing"
    assert sorted(stuck.evidence["idle_in_transaction"]["pids"]) == sorted([*idle, a_pid])
    blocking = {s["pid"]: s["blocking"] for s in stuck.evidence["idle_in_transaction"]["sessions"]}
    assert blocking[a_pid] == [b.pid] and blocking[idle[0]] == []
    assert "last statement (finished): SELECT count(*) FROM plays" in stuck.output

    # Each finding carries its run's time and recommends its action to the responder.
    context = panel(rf, incident, responder)
    assert set(context["evidence"]) == {
        "long_running_queries",
        "lock_contention",
        "idle_in_transaction",
    }
    assert context["evidence"]["lock_contention"]["found_at"] == locks.finished_at
    assert context["can_act"] and context["superseded"] == []
    for key, because in [
        ("db.terminate_blocker", ["lock_contention"]),
        ("db.terminate_idle_in_transaction", ["idle_in_transaction"]),
        ("db.terminate_query", ["long_running_queries"]),
    ]:
        row = step_row(context, key)
        assert row["recommended"] and row["because"] == because, key
        assert row["refusal"] == ""
    client.force_login(responder)
    page = client.get(incident.get_absolute_url()).content.decode()
    assert page.count('class="tag recommended-tag">recommended: ') == 3  # one per step
    assert f"lock_contention found by db.locks #{locks.pk} at " in page

    # Terminate the root blocker, through review and confirmation: its pid in the plan.
    plan, run = act(client, incident, "db.terminate_blocker", pid=a_pid)
    assert plan.startswith(f"terminate pid {a_pid} on lotolink-db (user postgres, idle in transa")
    assert f"the root blocker holding up pids {min(b.pid, c.pid)}, {max(b.pid, c.pid)}" in plan
    assert run.outcome == "ok", run.summary
    b.join()
    c.join()
    assert b.error is None and c.error is None  # the chain went on once A was gone
    assert not pg.alive(a_pid)

    # Then the idle-in-transaction sessions and the long query, each as recommended.
    plan, run = act(client, incident, "db.terminate_idle_in_transaction")
    assert plan.endswith(f"pids {', '.join(map(str, sorted(idle)))}")
    assert run.outcome == "ok" and sorted(run.result["terminated"]) == sorted(idle)
    # The confirmed run carried the plan's pids: it could terminate no other session.
    assert sorted(run.params["pids"]) == sorted(idle)
    plan, run = act(client, incident, "db.terminate_query", pid=sleeper.pid)
    assert plan.startswith(f"terminate pid {sleeper.pid} on lotolink-db")
    assert run.outcome == "ok"
    sleeper.join()
    assert not any(pg.alive(p) for p in [*idle, sleeper.pid])

    # Each successful action queued its findings' checks again (as LotoOps, on the
    # finding's target); once they ran, every finding is superseded.
    rechecks = {}
    for rerun in CheckRun.objects.filter(batch__startswith="recheck-").order_by("id"):
        assert rerun.requested_by is None and rerun.target_name == "lotolink-db"
        run_check.apply(args=(rerun.pk,))
        rerun.refresh_from_db()
        rechecks[rerun.step.key] = rerun
    assert set(rechecks) == {"db.slow_queries", "db.locks", "db.idle_in_transaction"}
    assert all(r.outcome == "ok" and r.evidence == {} for r in rechecks.values())
    context = panel(rf, incident, responder)
    assert context["evidence"] == {}
    gone = {f.key: f for f in context["superseded"]}
    assert set(gone) == {"long_running_queries", "lock_contention", "idle_in_transaction"}
    assert gone["lock_contention"].run == locks.pk
    assert gone["lock_contention"].superseded_by == rechecks["db.locks"].pk
    assert gone["lock_contention"].found_at == locks.finished_at
    for key in ("db.terminate_blocker", "db.terminate_idle_in_transaction", "db.terminate_query"):
        assert not step_row(context, key)["recommended"], key
    page = client.get(incident.get_absolute_url()).content.decode()
    assert 'class="tag recommended-tag"' not in page
    assert "No longer found" in page
    assert f"Superseded: run #{rechecks['db.locks'].pk} of this check no longer finds" in page
    # No stale pid is offered any more: the review has nothing to pick.
    review = client.get(f"/incidents/{incident.pk}/steps/db.terminate_blocker/action/", **HX)
    assert str(a_pid) not in re.sub(r"<input[^>]*csrf[^>]*>", "", review.content.decode())
    review = client.get(f"/incidents/{incident.pk}/steps/db.terminate_query/action/", **HX)
    assert f"pid {sleeper.pid}" not in review.content.decode()
    # A responder's own re-run finds nothing either.
    assert check(incident, "db.locks", responder).evidence == {}
    assert panel(rf, incident, responder)["evidence"] == {}
