"""The PostgreSQL probes against the real server of this machine (127.0.0.1:5432).

Real lock waits, real long queries, real idle sessions in a scratch database
(`lotoops_probe_pg`); a fake peer only for what a healthy server cannot do on demand
(refusing connections while starting up, out of slots, or not answering at all).
Without the server these tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from dataclasses import asdict
from pathlib import Path

import psycopg
import pytest

from diagnostics.models import Target
from diagnostics.probes import postgres
from diagnostics.probes.base import (
    REGISTRY,
    Outcome,
    ProbeError,
    ProbeResult,
    ProbeTimeout,
    TransientProbeError,
    get_probe,
)
from tests.conftest import IN_CI
from tests.diagnostics import pg_helpers as pg

if not pg.reachable():
    reason = f"these tests need PostgreSQL at {pg.HOST}:{pg.PORT} (superuser postgres, trust)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

RUNBOOK = Path(__file__).resolve().parents[2] / "diagnostics" / "runbooks" / "lotolink.toml"
PENDING_SQL = (
    "SELECT count(*) FROM plays WHERE status = 'pending' AND created_at < now() - interval '1 hour'"
)
SECRET = "s3cr3t-pg-value"


@pytest.fixture(scope="module")
def scratch_db() -> str:
    pg.create_scratch_db()
    return pg.DB_URL


@pytest.fixture
def target(scratch_db: str) -> Target:
    return Target(name="lotolink-db", kind="postgres", url=scratch_db)


@pytest.fixture
def sessions():
    opened = pg.Sessions()
    yield opened
    opened.close()


def build(name: str, target: Target, params: dict | None = None, *, timeout: float = 10):
    lines: list[str] = []
    probe = get_probe(name).build(target, params, timeout=timeout, emit=lines.append)
    return probe, lines


def run(
    name: str, target: Target, params: dict | None = None, *, timeout: float = 10
) -> tuple[ProbeResult, list[str]]:
    probe, lines = build(name, target, params, timeout=timeout)
    result = probe.run()
    json.dumps(asdict(result))  # everything a probe returns is JSON
    return result, lines


def plan(name: str, target: Target, params: dict | None = None) -> str:
    return build(name, target, params)[0].plan()


# --- registration and the runbook -------------------------------------------------------


def test_every_postgres_probe_is_registered_for_postgres_targets():
    diagnostics = {
        "postgres.select_one",
        "postgres.connection_count",
        "postgres.active_queries",
        "postgres.locks",
        "postgres.slow_queries",
        "postgres.replication",
        "postgres.table_sizes",
        "postgres.count_query",
        "postgres.idle_in_transaction",
        "postgres.money_at_risk",
    }
    actions = {
        "postgres.kill_idle_connections",
        "postgres.terminate_query",
        "postgres.terminate_blocker",
        "postgres.terminate_idle_in_transaction",
        "postgres.vacuum",
    }
    for name in diagnostics | actions:
        probe = REGISTRY[name]
        assert probe.target_kind == "postgres"
        assert probe.action is (name in actions), name


def test_the_runbook_steps_build_with_their_params(target):
    runbook = tomllib.loads(RUNBOOK.read_text())
    steps = [
        step
        for book in runbook["runbook"]
        for step in book.get("step", [])
        if step["probe"].startswith("postgres.")
    ]
    built = set()
    for step in steps:
        probe = get_probe(step["probe"])
        probe.build(target, step.get("params", {}), timeout=step.get("timeout_seconds", 30))
        assert probe.action is (step["kind"] == "action"), step["key"]
        built.add(step["probe"])
    assert len(built) == 16


# --- diagnostics --------------------------------------------------------------------------


def test_select_one_reports_latency_and_server_version(target):
    result, lines = run("postgres.select_one", target)
    assert result.outcome == Outcome.OK
    assert result.summary.startswith("SELECT 1 in ")
    assert "PostgreSQL 1" in result.summary
    assert result.data["database"] == pg.DB
    assert result.data["server_version_num"] >= 120000
    assert result.data["query_ms"] >= 0
    assert any(line.startswith("SELECT 1") for line in lines)


def test_connection_count_is_ok_below_the_ratio(target):
    result, lines = run("postgres.connection_count", target, {"exhausted_ratio": 0.9})
    assert result.evidence == {}
    assert result.data["max"] > 0
    assert 1 <= result.data["count"] <= result.data["max"]
    assert result.data["by_state"]["active"] >= 1  # this check itself
    assert lines[0].split() == ["state", "connections", "in", pg.DB]


def test_connection_count_finds_exhausted_connections_at_a_tiny_ratio(target, sessions):
    for _ in range(3):
        sessions.idle()
    result, _ = run("postgres.connection_count", target, {"exhausted_ratio": 0.01})
    assert result.outcome == Outcome.FAILING
    found = result.evidence["db_connections_exhausted"]
    assert found["count"] >= 4
    assert found["max"] == result.data["max"]
    assert found["ratio"] == pytest.approx(found["count"] / found["max"], abs=1e-3)
    assert result.data["in_database"] >= 4
    assert "connections exhausted" in result.summary


def test_a_server_out_of_slots_is_itself_the_exhausted_finding():
    with pg.FakePostgres("53300", "sorry, too many clients already") as fake:
        target = Target(name="lotolink-db", kind="postgres", url=fake.url)
        result, _ = run("postgres.connection_count", target)
    assert result.outcome == Outcome.FAILING
    assert result.evidence["db_connections_exhausted"]["refused"] is True
    assert "too many clients" in result.summary


def test_active_queries_shows_running_queries_but_not_itself(target, sessions):
    long_comment = "x" * 300
    sleeper = sessions.background(f"SELECT pg_sleep(30) /* {long_comment} */")
    pg.wait_until(lambda: (pg.activity(sleeper.pid) or {}).get("state") == "active")
    idle = sessions.idle()

    result, lines = run("postgres.active_queries", target)

    rows = {row["pid"]: row for row in result.data["sessions"]}
    assert sleeper.pid in rows
    assert idle.info.backend_pid not in rows
    assert all(row["application_name"] != "lotoops-probe" for row in rows.values())
    row = rows[sleeper.pid]
    assert row["state"] == "active"
    assert row["wait_event"] == "PgSleep"
    assert row["query"].startswith("SELECT pg_sleep(30)")
    assert len(row["query"]) == 201 and row["query"].endswith("…")
    assert lines[0].split()[:3] == ["pid", "user", "state"]
    assert any(line.startswith(str(sleeper.pid)) for line in lines)


def test_locks_report_who_blocks_whom(target, sessions):
    holder = sessions.open(autocommit=False)
    holder.execute("SELECT id FROM plays WHERE id = 1 FOR UPDATE")
    waiter = sessions.background("UPDATE plays SET note = note WHERE id = 1")
    pg.wait_until(
        lambda: (pg.activity(waiter.pid) or {}).get("wait_event_type") == "Lock",
        what="the UPDATE to wait for the row lock",
    )

    result, lines = run("postgres.locks", target)

    assert result.outcome == Outcome.FAILING
    found = result.evidence["lock_contention"]
    assert found["waiting_pids"] == [waiter.pid]
    assert found["blocking_pids"] == [holder.info.backend_pid]
    (wait,) = result.data["waits"]
    assert wait["blocked_by"] == [holder.info.backend_pid]
    assert wait["query"].startswith("UPDATE plays")
    assert wait["waiting_seconds"] >= 0
    (blocker,) = result.data["blockers"]
    assert blocker["state"] == "idle in transaction"
    assert "FOR UPDATE" in blocker["query"]
    assert f"{waiter.pid} by {holder.info.backend_pid}" in result.summary
    assert "waiting:" in lines and "blocking:" in lines

    holder.rollback()
    waiter.join()
    assert waiter.error is None
    result, _ = run("postgres.locks", target)
    assert result.outcome == Outcome.OK and result.evidence == {}


def test_a_slow_query_is_found_then_terminated_once(target, sessions):
    sleeper = sessions.background("SELECT pg_sleep(30)")
    pg.wait_until(
        lambda: ((pg.activity(sleeper.pid) or {}).get("seconds") or 0) > 1.05,
        what="pg_sleep to pass one second",
    )
    result, _ = run("postgres.slow_queries", target, {"min_seconds": 300})
    assert result.outcome == Outcome.OK and result.evidence == {}

    result, lines = run("postgres.slow_queries", target, {"min_seconds": 1})

    assert result.outcome == Outcome.FAILING
    found = result.evidence["long_running_queries"]
    assert found["pids"] == [sleeper.pid]
    (query,) = found["queries"]
    assert query["pid"] == sleeper.pid
    assert query["seconds"] >= 1
    assert query["query"] == "SELECT pg_sleep(30)"
    assert result.summary == f"1 query running longer than 1 s: pid {sleeper.pid}"
    assert lines[0].split()[:4] == ["pid", "user", "running", "for"]
    assert lines[2].startswith(f"{sleeper.pid}  postgres  ")
    assert lines[3] == "    SELECT pg_sleep(30)"  # the statement beneath its row

    sentence = plan("postgres.terminate_query", target, {"pid": sleeper.pid})
    assert sentence.startswith(f"terminate pid {sleeper.pid} on lotolink-db (user postgres, active")
    assert sentence.endswith(": SELECT pg_sleep(30)")

    result, _ = run("postgres.terminate_query", target, {"pid": sleeper.pid})
    assert result.outcome == Outcome.OK
    assert result.data["gone"] is True
    sleeper.join()
    assert isinstance(sleeper.error, psycopg.OperationalError)  # "terminating connection…"
    assert not pg.alive(sleeper.pid)

    with pytest.raises(ProbeError, match="not a backend") as refused:
        run("postgres.terminate_query", target, {"pid": sleeper.pid})
    assert not isinstance(refused.value, TransientProbeError)


def test_terminate_query_refuses_what_is_not_a_running_query_here(target, sessions):
    with pytest.raises(ProbeError, match="give the pid"):
        plan("postgres.terminate_query", target)
    with pytest.raises(ProbeError, match="give the pid"):
        run("postgres.terminate_query", target, {"pid": None})

    idle = sessions.idle()
    with pytest.raises(ProbeError, match="is idle"):
        run("postgres.terminate_query", target, {"pid": idle.info.backend_pid})
    assert pg.alive(idle.info.backend_pid)

    elsewhere = sessions.background("SELECT pg_sleep(30)", db="postgres")
    pg.wait_until(lambda: (pg.activity(elsewhere.pid) or {}).get("state") == "active")
    with pytest.raises(ProbeError, match="connected to database postgres"):
        run("postgres.terminate_query", target, {"pid": elsewhere.pid})
    assert pg.alive(elsewhere.pid)

    with pytest.raises(ProbeError, match="not a backend"):
        plan("postgres.terminate_query", target, {"pid": 2_000_000_000})

    probe, _ = build("postgres.terminate_query", target, {"pid": 1})
    with probe.session(read_only=True) as conn:
        probe.params.pid = conn.info.backend_pid
        with pytest.raises(ProbeError, match="own session"):
            probe.running_backend(conn)


def test_kill_idle_connections_terminates_only_idle_sessions_of_the_target_database(
    target, sessions
):
    idle = [sessions.idle(app="pg-probe-test-idle").info.backend_pid for _ in range(3)]
    busy = sessions.background("SELECT pg_sleep(30)")
    other_db = sessions.idle(db="postgres").info.backend_pid
    pg.wait_until(lambda: (pg.activity(busy.pid) or {}).get("state") == "active")
    time.sleep(0.4)
    params = {"idle_minutes": 0.005}  # 0.3 s

    sentence = plan("postgres.kill_idle_connections", target, params)
    assert sentence == (
        "terminate 3 connections idle for more than 0.005 min on lotolink-db "
        f"(database {pg.DB}): pids {', '.join(map(str, idle))}"
    )
    assert all(pg.alive(pid) for pid in idle)  # planning changed nothing

    result, lines = run("postgres.kill_idle_connections", target, params)

    assert result.outcome == Outcome.OK
    assert sorted(result.data["terminated"]) == sorted(idle)
    assert result.data["still_present"] == [] and result.data["refused"] == []
    assert result.summary.startswith("terminated 3 idle connections on lotolink-db: pids ")
    assert not any(pg.alive(pid) for pid in idle)
    assert pg.alive(busy.pid) and pg.alive(other_db)
    assert lines[0].split()[:3] == ["pid", "user", "application"]


def test_kill_idle_connections_terminates_only_the_pids_its_plan_named(target, sessions):
    """A connection that went idle after the review is not in the confirmed plan: the
    run leaves it alone; a named one that is gone is reported as left alone."""
    reviewed = [sessions.idle(app="pg-probe-test-idle") for _ in range(3)]
    time.sleep(0.4)
    params = {"idle_minutes": 0.005}  # 0.3 s
    probe, _ = build("postgres.kill_idle_connections", target, params)
    sentence = probe.plan()
    named = [c.info.backend_pid for c in reviewed]
    assert probe.bound == {"pids": named}
    assert sentence.endswith(f"pids {', '.join(map(str, named))}")

    later = sessions.idle(app="pg-probe-test-idle").info.backend_pid  # idle since the review
    reviewed[2].close()  # gone since the review
    time.sleep(0.4)

    result, lines = run("postgres.kill_idle_connections", target, {**params, **probe.bound})

    assert sorted(result.data["terminated"]) == sorted(named[:2])
    assert result.data["skipped"] == [named[2]]
    assert f"no longer idle, left alone: pids {named[2]}" in lines
    assert pg.alive(later)


def test_terminate_idle_in_transaction_terminates_only_the_pids_its_plan_named(target, sessions):
    reviewed = sessions.open(autocommit=False)
    reviewed.execute("SELECT 1")
    time.sleep(0.3)
    params = {"min_seconds": 0.2}
    probe, _ = build("postgres.terminate_idle_in_transaction", target, params)
    probe.plan()
    assert probe.bound == {"pids": [reviewed.info.backend_pid]}

    later = sessions.open(autocommit=False)  # idle in transaction since the review
    later.execute("SELECT 1")
    time.sleep(0.3)

    result, _ = run("postgres.terminate_idle_in_transaction", target, {**params, **probe.bound})

    assert result.data["terminated"] == [reviewed.info.backend_pid]
    assert pg.alive(later.info.backend_pid)
    later.rollback()


def test_a_plans_pids_are_checked_as_pids(target):
    with pytest.raises(ProbeError, match="must be a whole number"):
        build("postgres.terminate_idle_in_transaction", target, {"pids": ["1; DROP"]})


def test_kill_idle_connections_defaults_to_thirty_minutes(target, sessions):
    fresh = sessions.idle().info.backend_pid
    sentence = plan("postgres.kill_idle_connections", target)
    assert sentence == (
        f"terminate nothing: no connection to {pg.DB} on lotolink-db is idle for more than 30 min"
    )
    result, _ = run("postgres.kill_idle_connections", target)
    assert result.outcome == Outcome.OK
    assert result.data["terminated"] == []
    assert pg.alive(fresh)


def test_replication_without_replicas_is_ok(target):
    result, lines = run("postgres.replication", target)
    assert result.outcome == Outcome.OK
    assert result.summary == "no replicas connected"
    assert result.data == {"replicas": []}
    assert lines == ["no replicas connected"]


def test_table_sizes_lists_the_largest_tables(target):
    result, lines = run("postgres.table_sizes", target, {"limit": 20})
    tables = {f"{row['schema']}.{row['table']}": row for row in result.data["tables"]}
    assert "public.plays" in tables
    assert f"public.{pg.ODD_TABLE}" in tables
    assert tables["public.plays"]["total_bytes"] > 0
    assert lines[0].split() == ["table", "total", "size"]

    result, _ = run("postgres.table_sizes", target, {"limit": 1})
    assert len(result.data["tables"]) == 1


# --- count_query -----------------------------------------------------------------------


def test_count_query_finds_stuck_plays(target):
    params = {
        "sql": PENDING_SQL,
        "evidence": "plays_stuck",
        "threshold": 1,
        "label": "plays pending over 1 hour",
    }
    result, lines = run("postgres.count_query", target, params)
    assert result.outcome == Outcome.FAILING
    assert result.summary == "3 plays pending over 1 hour (threshold 1)"
    assert result.evidence == {"plays_stuck": {"count": pg.PENDING_OLD, "threshold": 1}}
    assert lines[-1].split() == ["3", "1"]

    result, _ = run("postgres.count_query", target, {**params, "threshold": 4})
    assert result.outcome == Outcome.OK
    assert result.evidence == {}
    assert result.summary == "3 plays pending over 1 hour"


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM plays",
        "UPDATE plays SET status = 'paid'",
        "SELECT 1; DROP TABLE plays",
        "SELECT count(*) FROM plays; SELECT 2",
        "WITH gone AS (DELETE FROM plays RETURNING 1) SELECT count(*) FROM gone",
        "SELECT count(*) INTO stolen FROM plays",
        "SELECT count(*) FROM plays FOR UPDATE",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity",
        'SELECT count("pg_cancel_backend"(pid)) FROM pg_stat_activity',
        "SELECT count(*) FROM plays WHERE id = 1 /* unterminated",
        "SELECT count(*) FROM plays WHERE status = 'unterminated",
        "VACUUM plays",
        "   ",
    ],
)
def test_count_query_refuses_anything_but_one_select_before_connecting(target, monkeypatch, sql):
    def no_connection(*args, **kwargs):
        raise AssertionError("the SQL was sent")

    monkeypatch.setattr(psycopg, "connect", no_connection)
    with pytest.raises(ProbeError, match="count query"):
        build("postgres.count_query", target, {"sql": sql, "evidence": "plays_stuck"})
    monkeypatch.undo()
    assert pg.plays_count() == 6  # the table is still there, untouched


@pytest.mark.parametrize(
    ("sql", "sent"),
    [
        ("SELECT count(*) FROM plays;", "SELECT count(*) FROM plays"),
        ("select count(*) from plays -- a comment; DELETE", None),
        ("SELECT count(*) FROM plays WHERE note = 'a;b DELETE'", None),
        ("SELECT count(*) FROM plays WHERE note = $$x; DROP TABLE plays$$", None),
        ("SELECT count(*) FROM plays WHERE note = E'it\\'s; DELETE'", None),
        ("WITH p AS (SELECT * FROM plays) SELECT count(*) FROM p", None),
        ('SELECT count(*) FROM "plays" WHERE "status" LIKE \'pend%\'', None),
    ],
)
def test_count_query_accepts_one_select_whatever_its_literals_hold(target, sql, sent):
    assert postgres.check_count_sql(sql) == (sent or sql)
    result, _ = run("postgres.count_query", target, {"sql": sql, "evidence": "plays_stuck"})
    assert isinstance(result.data["count"], int)


def test_count_query_runs_read_only_and_cannot_write(target):
    params = {
        "sql": "SELECT count(*) FROM (SELECT 1) AS one"
        " WHERE current_setting('transaction_read_only') = 'on'",
        "evidence": "read_only",
    }
    result, _ = run("postgres.count_query", target, params)
    assert result.data["count"] == 1

    with pytest.raises(ProbeError, match="read-only") as refused:
        run(
            "postgres.count_query",
            target,
            {"sql": "SELECT count(*) FROM lotoops_sneaky()", "evidence": "plays_stuck"},
        )
    assert not isinstance(refused.value, TransientProbeError)
    assert pg.plays_count() == 6


def test_count_query_on_a_missing_table_is_a_clear_permanent_error(target):
    with pytest.raises(ProbeError) as refused:
        run(
            "postgres.count_query",
            target,
            {"sql": "SELECT count(*) FROM no_such_table", "evidence": "plays_stuck"},
        )
    assert not isinstance(refused.value, TransientProbeError)
    assert str(refused.value) == (
        'lotolink-db: relation "no_such_table" does not exist '
        "(the table or view the query reads is missing)"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1, 2", "exactly one column"),
        ("SELECT count(*) FROM plays GROUP BY status", "exactly one row, not 2"),
        ("SELECT 'many'", "must return a number, not str"),
        ("SELECT NULL::int", "NULL"),
    ],
)
def test_count_query_must_return_one_number(target, sql, message):
    with pytest.raises(ProbeError, match=message):
        run("postgres.count_query", target, {"sql": sql, "evidence": "plays_stuck"})


def test_a_query_past_its_timeout_times_out_and_is_not_retried(target):
    started = time.monotonic()
    with pytest.raises(ProbeTimeout) as timed_out:
        run(
            "postgres.count_query",
            target,
            {"sql": "SELECT count(*) FROM generate_series(1, 10000000000)", "evidence": "x"},
            timeout=1,
        )
    assert time.monotonic() - started < 3
    assert not isinstance(timed_out.value, TransientProbeError)
    assert str(timed_out.value) == "lotolink-db: the query timed out after 1 s"


def test_a_check_whose_backend_is_terminated_is_transient(target):
    outcome: dict[str, BaseException] = {}

    def check() -> None:
        try:
            run(
                "postgres.count_query",
                target,
                {"sql": "SELECT count(*) FROM pg_sleep(20)", "evidence": "x"},
                timeout=25,
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    try:
        pg.wait_until(
            lambda: pg.query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'lotoops-probe'"
                " AND datname = %s AND query LIKE %s",
                [pg.DB, "%pg_sleep(20)%"],
            ),
            what="the probe's query to start",
        )
    finally:
        pg.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'lotoops-probe' AND query LIKE %s",
            ["%pg_sleep(20)%"],
        )
        thread.join(10)
    assert isinstance(outcome.get("error"), TransientProbeError)
    assert "connection lost during the check" in str(outcome["error"])


# --- actions: vacuum ---------------------------------------------------------------------


def test_vacuum_of_the_whole_database(target):
    sentence = plan("postgres.vacuum", target)
    assert sentence.startswith(f"VACUUM ANALYZE the whole database {pg.DB} on lotolink-db (")
    result, lines = run("postgres.vacuum", target)
    assert result.outcome == Outcome.OK
    assert result.data["table"] is None
    assert result.summary.startswith(f"VACUUM ANALYZE of database {pg.DB} on lotolink-db done")
    assert lines[0] == "VACUUM (ANALYZE) on lotolink-db"


def test_vacuum_of_one_table_quotes_its_name(target):
    sentence = plan("postgres.vacuum", target, {"table": "plays"})
    assert sentence.startswith(
        f'VACUUM ANALYZE table "public"."plays" on lotolink-db (database {pg.DB}, '
    )
    result, lines = run("postgres.vacuum", target, {"table": "plays"})
    assert result.outcome == Outcome.OK
    assert result.data["table"] == '"public"."plays"'
    assert lines[0] == 'VACUUM (ANALYZE) "public"."plays" on lotolink-db'
    vacuumed = pg.query(
        "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables WHERE relname = 'plays'",
        url=pg.DB_URL,
    )[0]
    assert vacuumed["last_vacuum"] is not None and vacuumed["last_analyze"] is not None

    result, _ = run("postgres.vacuum", target, {"table": pg.ODD_TABLE})
    assert result.data["table"] == '"public"."odd""name"'
    result, _ = run("postgres.vacuum", target, {"table": f"public.{pg.ODD_TABLE}"})
    assert result.data["table"] == '"public"."odd""name"'


@pytest.mark.parametrize(
    "table", ["plays; DROP TABLE plays", 'plays"; DROP TABLE plays; --', "nope"]
)
def test_vacuum_refuses_a_table_that_does_not_exist(target, table):
    with pytest.raises(ProbeError, match="no table"):
        plan("postgres.vacuum", target, {"table": table})
    with pytest.raises(ProbeError, match="no table"):
        run("postgres.vacuum", target, {"table": table})
    assert pg.plays_count() == 6


# --- failures --------------------------------------------------------------------------------


def test_a_refused_connection_is_permanent_and_fast():
    target = Target(name="lotolink-db", kind="postgres", url="postgres://postgres@127.0.0.1:1/x")
    started = time.monotonic()
    with pytest.raises(ProbeError, match="Connection refused") as refused:
        run("postgres.select_one", target)
    assert time.monotonic() - started < 2
    assert not isinstance(refused.value, TransientProbeError)
    assert str(refused.value).startswith("cannot connect to lotolink-db: ")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"postgres://postgres@{pg.HOST}:{pg.PORT}/no_such_db", 'database "no_such_db"'),
        (f"postgres://no_such_role@{pg.HOST}:{pg.PORT}/{pg.DB}", 'role "no_such_role"'),
    ],
    ids=["database", "role"],  # the scratch database's name differs per xdist worker
)
def test_an_unknown_database_or_role_is_permanent(url, message):
    target = Target(name="lotolink-db", kind="postgres", url=url)
    with pytest.raises(ProbeError, match=message) as refused:
        run("postgres.connection_count", target)
    assert not isinstance(refused.value, TransientProbeError)
    assert "does not exist" in str(refused.value)


def test_a_server_starting_up_is_transient():
    with pg.FakePostgres("57P03", "the database system is starting up") as fake:
        target = Target(name="lotolink-db", kind="postgres", url=fake.url)
        with pytest.raises(TransientProbeError, match="starting up"):
            run("postgres.select_one", target)


def test_a_server_that_never_answers_is_a_transient_connect_timeout():
    with pg.FakePostgres(silent=True) as fake:
        target = Target(name="lotolink-db", kind="postgres", url=fake.url)
        started = time.monotonic()
        with pytest.raises(TransientProbeError, match="no answer within 1 s"):
            run("postgres.select_one", target, timeout=1)
    assert time.monotonic() - started < 4  # libpq's floor is 2 s


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("postgres.slow_queries", {"min_seconds": "abc"}, "min_seconds must be a number"),
        ("postgres.idle_in_transaction", {"min_seconds": -1}, "min_seconds must be 0 or more"),
        ("postgres.terminate_idle_in_transaction", {"min_seconds": "x"}, "must be a number"),
        ("postgres.terminate_blocker", {"pid": 0}, "positive"),
        ("postgres.slow_queries", {"min_seconds": -1}, "min_seconds must be 0 or more"),
        ("postgres.slow_queries", {"seconds": 5}, "unknown parameter"),
        ("postgres.connection_count", {"exhausted_ratio": 0}, "exhausted_ratio"),
        ("postgres.connection_count", {"exhausted_ratio": 1.5}, "exhausted_ratio"),
        ("postgres.connection_count", {"exhausted_ratio": "90%"}, "must be a number"),
        ("postgres.table_sizes", {"limit": 0}, "limit"),
        ("postgres.count_query", {"evidence": "plays_stuck"}, "missing parameter"),
        ("postgres.count_query", {"sql": PENDING_SQL, "evidence": "Plays Stuck"}, "evidence"),
        ("postgres.count_query", {"sql": PENDING_SQL, "evidence": "x", "threshold": 0}, "1 or"),
        ("postgres.terminate_query", {"pid": "4121"}, "pid must be a whole number"),
        ("postgres.terminate_query", {"pid": -3}, "positive"),
        ("postgres.kill_idle_connections", {"idle_minutes": -1}, "0 or more"),
        ("postgres.vacuum", {"table": ""}, "table name"),
    ],
)
def test_malformed_params_are_refused_when_built(target, name, params, message):
    with pytest.raises(ProbeError, match=message):
        build(name, target, params)


# --- the secret --------------------------------------------------------------------------------


def test_the_secret_never_shows_in_results_output_or_errors(target, sessions, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_TEST_PG_PASSWORD", SECRET)
    target.secret_env = "LOTOOPS_TARGET_TEST_PG_PASSWORD"
    sent: list[str] = []
    real_connect = psycopg.connect

    def spy(conninfo: str = "", **kwargs):
        if kwargs.get("application_name") == "lotoops-probe":
            sent.append(conninfo)
        return real_connect(conninfo, **kwargs)

    monkeypatch.setattr(psycopg, "connect", spy)
    sleeper = sessions.background(f"SELECT pg_sleep(30), '{SECRET}' AS leaked")
    pg.wait_until(lambda: (pg.activity(sleeper.pid) or {}).get("state") == "active")

    seen: list[str] = []
    checks = [
        ("postgres.select_one", {}),
        ("postgres.connection_count", {"exhausted_ratio": 0.01}),
        ("postgres.active_queries", {}),
        ("postgres.slow_queries", {"min_seconds": 0}),
        ("postgres.locks", {}),
        ("postgres.replication", {}),
        ("postgres.table_sizes", {}),
        ("postgres.count_query", {"sql": PENDING_SQL, "evidence": "plays_stuck"}),
    ]
    for name, params in checks:
        result, lines = run(name, target, params)
        seen += [json.dumps(asdict(result)), *lines]
    seen.append(plan("postgres.kill_idle_connections", target))
    seen.append(plan("postgres.terminate_query", target, {"pid": sleeper.pid}))
    failing = [
        # A table named like the secret: the server's error quotes it.
        ("postgres.count_query", {"sql": f'SELECT count(*) FROM "{SECRET}"', "evidence": "x"}),  # noqa: S608
        ("postgres.vacuum", {"table": SECRET}),
    ]
    for name, params in failing:
        with pytest.raises(ProbeError) as refused:
            run(name, target, params)
        seen.append(str(refused.value))
    bad = Target(
        name="lotolink-db",
        kind="postgres",
        url=f"postgres://postgres@{pg.HOST}:{pg.PORT}/no_such_db",
        secret_env="LOTOOPS_TARGET_TEST_PG_PASSWORD",
    )
    with pytest.raises(ProbeError) as refused:
        run("postgres.select_one", bad)
    seen.append(str(refused.value))

    assert sent and all(SECRET in conninfo for conninfo in sent)  # the password was really sent
    everything = "\n".join(seen)
    assert SECRET not in everything
    assert "•••" in everything  # the sleeping query's text, scrubbed
    assert "pg_sleep(30), '•••' AS leaked" in everything


# --- precise findings: lock chains, idle in transaction, titles -------------------------


@pytest.mark.parametrize(
    ("graph", "roots"),
    [
        ({}, {}),
        ({20: [10]}, {10: [20]}),
        ({20: [10], 30: [20]}, {10: [20, 30]}),  # C waits on B waits on A
        ({30: [20, 10], 20: [10]}, {10: [20, 30]}),  # a tuple-lock queue names both
        ({20: [10], 40: [30]}, {10: [20], 30: [40]}),  # two chains
        ({20: [30], 30: [20]}, {}),  # a deadlock not broken yet: no root
        ({20: [30], 30: [20], 40: [20]}, {}),
        ({20: [0]}, {0: [20]}),  # a prepared transaction
    ],
)
def test_lock_chains_name_each_root_blocker_and_whom_it_holds_up(graph, roots):
    assert postgres.lock_chains(graph) == roots


def test_slow_queries_count_only_active_queries_not_idle_transactions_or_lock_waits(
    target, sessions
):
    in_transaction = sessions.open(autocommit=False)
    in_transaction.execute("SELECT id FROM plays WHERE id = 1 FOR UPDATE")
    waiter = sessions.background("UPDATE plays SET note = note WHERE id = 1")
    sleeper = sessions.background("SELECT pg_sleep(30)")
    pg.wait_until(
        lambda: (
            all(((pg.activity(p) or {}).get("seconds") or 0) > 1.05 for p in (waiter.pid,))
            and ((pg.activity(sleeper.pid) or {}).get("seconds") or 0) > 1.05
        ),
        what="the waiter and the sleeper to pass one second",
    )
    result, lines = run("postgres.slow_queries", target, {"min_seconds": 1})
    assert result.evidence["long_running_queries"]["pids"] == [sleeper.pid]
    assert (result.data["lock_waits"], result.data["idle_in_transaction"]) == (1, 1)
    assert "1 session waiting for a lock (not counted: see db.locks)" in lines
    assert "1 session idle in transaction (not counted: see db.idle_in_transaction)" in lines

    result, lines = run("postgres.idle_in_transaction", target, {"min_seconds": 1})
    (session,) = result.data["sessions"]
    assert session["pid"] == in_transaction.info.backend_pid
    assert session["blocking"] == [waiter.pid]
    assert result.evidence["idle_in_transaction"]["pids"] == [in_transaction.info.backend_pid]
    assert "    last statement (finished): SELECT id FROM plays WHERE id = 1 FOR UPDATE" in lines
    result, _ = run("postgres.idle_in_transaction", target, {"min_seconds": 300})
    assert result.outcome == Outcome.OK and result.evidence == {}
    in_transaction.rollback()
    waiter.join()


def test_terminate_blocker_refuses_what_is_not_a_root_blocker_here(target, sessions):
    holder = sessions.open(autocommit=False)
    holder.execute("SELECT id FROM plays WHERE id = 1 FOR UPDATE")
    waiter = sessions.background("UPDATE plays SET note = note WHERE id = 1")
    pg.wait_until(lambda: (pg.activity(waiter.pid) or {}).get("wait_event_type") == "Lock")
    idle = sessions.idle()

    with pytest.raises(ProbeError, match="give the pid"):
        plan("postgres.terminate_blocker", target)
    with pytest.raises(ProbeError, match="no longer blocks anyone"):
        plan("postgres.terminate_blocker", target, {"pid": idle.info.backend_pid})
    with pytest.raises(
        ProbeError, match=f"not the root of its chain: it waits on pids {holder.info.backend_pid}"
    ):
        plan("postgres.terminate_blocker", target, {"pid": waiter.pid})
    with pytest.raises(ProbeError, match="not a backend"):
        plan("postgres.terminate_blocker", target, {"pid": 2_000_000_000})
    assert pg.alive(holder.info.backend_pid) and pg.alive(waiter.pid)

    sentence = plan("postgres.terminate_blocker", target, {"pid": holder.info.backend_pid})
    assert f"the root blocker holding up pids {waiter.pid}" in sentence
    holder.rollback()  # the chain resolves by itself before anyone confirms
    waiter.join()
    with pytest.raises(ProbeError, match="no longer blocks anyone"):
        run("postgres.terminate_blocker", target, {"pid": holder.info.backend_pid})
    assert pg.alive(holder.info.backend_pid)


def test_a_steps_title_follows_its_threshold(db):
    from django.core.exceptions import ValidationError

    from diagnostics.models import RunbookStep

    def title(text: str, probe: str, params: dict) -> str:
        return RunbookStep(title=text, probe=probe, params=params).display_title

    slow = "Queries running over {min_seconds}"
    assert (
        title(slow, "postgres.slow_queries", {"min_seconds": 300}) == "Queries running over 5 min"
    )
    assert (
        title(slow, "postgres.slow_queries", {"min_seconds": 120}) == "Queries running over 2 min"
    )
    assert title(slow, "postgres.slow_queries", {"min_seconds": 90}) == "Queries running over 90 s"
    assert title(slow, "postgres.slow_queries", {}) == "Queries running over 5 min"  # default
    assert title(slow, "postgres.slow_queries", {"min_seconds": 7200}) == "Queries running over 2 h"
    idle = "Terminate idle connections older than {idle_minutes}"
    assert title(idle, "postgres.kill_idle_connections", {"idle_minutes": 30}) == (
        "Terminate idle connections older than 30 min"
    )
    step = RunbookStep(
        key="db.slow_queries",
        title="Queries running over {minutes}",
        kind="diagnostic",
        probe="postgres.slow_queries",
        target_kind="postgres",
    )
    with pytest.raises(ValidationError, match=r"names \{minutes\}, which postgres.slow_queries"):
        step.clean()
    step.title = "Queries running over {min_seconds"
    with pytest.raises(ValidationError, match="Unbalanced braces"):
        step.clean()
