"""Files a run produces become evidence: the engine stores them on the incident with
their SHA-256 and removes the temporary file; sec.db_snapshot is a real `pg_dump`
of the machine's PostgreSQL (a scratch database), restorable with `pg_restore` into
the same rows, its password never shown anywhere."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from diagnostics import services
from diagnostics.models import CheckRun, Runbook, RunbookStep, RunStatus, Target
from diagnostics.probes import postgres
from diagnostics.probes.base import (
    Probe,
    ProbeError,
    ProbeFile,
    ProbeResult,
    ProbeTimeout,
    get_probe,
    register,
)
from diagnostics.tasks import run_check
from incidents import evidence
from incidents.models import EventKind, EvidenceFile
from tests import factories
from tests.conftest import IN_CI
from tests.diagnostics import pg_helpers as pg

pytestmark = pytest.mark.django_db

PASSWORD = "pl4nted-Pg-Pass-7c1e"  # trust auth ignores it; it must never show
RESTORED_DB = f"{pg.DB}_restored"[:63]


# --- a probe that produces a file, for the engine -------------------------------------


@dataclass
class FileParams:
    content: str = "exported log line\n"
    name: str = "backend-logs.txt"


@register
class FileProbe(Probe):
    name = "test.export_file"
    target_kind = "http"
    action = True
    Params = FileParams

    def plan(self) -> str:
        return f"export {self.params.name}"

    def run(self) -> ProbeResult:
        fd, path = tempfile.mkstemp(prefix="lotoops-test-export-")
        with os.fdopen(fd, "w") as handle:
            handle.write(self.params.content)
        self.emit(f"wrote {path}")
        return ProbeResult(
            "ok",
            "exported the logs",
            files=[ProbeFile(name=self.params.name, path=path, content_type="text/plain")],
        )


@pytest.fixture
def store(settings, tmp_path: Path) -> Path:
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    return settings.EVIDENCE_ROOT


@pytest.fixture
def export_step(runbook) -> RunbookStep:
    book = Runbook.objects.create(key="evidencebook", title="Evidence", section="9", order=98)
    return RunbookStep.objects.create(
        runbook=book,
        key="test.export",
        title="Export logs",
        kind="action",
        probe="test.export_file",
        target_kind="http",
    )


def confirm_and_run(incident, step, target, actor, params=None) -> CheckRun:
    plan = services.plan_action(step, target, params or {})
    run = services.run_action(
        incident, step, actor=actor, target=target, params=params or {}, plan=plan
    )
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    return run


def output_paths(run: CheckRun) -> list[str]:
    return [line.removeprefix("wrote ") for line in run.output.splitlines() if "wrote " in line]


def test_a_file_from_a_run_is_stored_with_its_hash_and_the_temp_file_removed(
    store, export_step, api_target, responder
):
    incident = factories.declare(actor=responder, category="security", title="Leak")
    content = "line one\nline two\n" * 1000
    run = confirm_and_run(incident, export_step, api_target, responder, {"content": content})
    assert run.status == RunStatus.SUCCEEDED and run.outcome == "ok"
    (file,) = EvidenceFile.objects.filter(incident=incident)
    assert file.sha256 == hashlib.sha256(content.encode()).hexdigest()
    assert file.size == len(content) and file.name == "backend-logs.txt"
    assert file.check_run_id == run.pk and file.created_by == responder
    assert (store / file.path).read_text() == content
    (temp,) = output_paths(run)
    assert not os.path.exists(temp)
    kinds = list(incident.timeline.order_by("id").values_list("kind", flat=True))
    assert kinds[-2:] == [EventKind.EVIDENCE, EventKind.CHECK_RESULT]
    assert evidence.verify(incident)[0].ok


def test_a_file_that_cannot_be_stored_makes_the_run_an_error_that_says_so(
    settings, tmp_path, export_step, api_target, responder
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.EVIDENCE_ROOT = blocker / "evidence"
    incident = factories.declare(actor=responder, title="Leak")
    run = confirm_and_run(incident, export_step, api_target, responder)
    assert run.status == RunStatus.FAILED and run.outcome == "error"
    assert "backend-logs.txt could not be stored as evidence" in run.summary
    assert not EvidenceFile.objects.exists()
    (temp,) = output_paths(run)
    assert not os.path.exists(temp)
    result = incident.timeline.filter(kind=EventKind.CHECK_RESULT).get()
    assert "failed" in result.message and "could not be stored as evidence" in result.message
    assert result.data["outcome"] == "error"


def test_a_run_finished_twice_stores_its_file_once(store, export_step, api_target, responder):
    incident = factories.declare(actor=responder, title="Leak")
    run = confirm_and_run(incident, export_step, api_target, responder)
    late = FileProbe.build(api_target, {}, timeout=5).run()
    assert not services.finish_run(run, RunStatus.SUCCEEDED, result=late, secrets=[])
    assert EvidenceFile.objects.count() == 1
    assert not os.path.exists(late.files[0].path)


# --- sec.db_snapshot against the machine's PostgreSQL ---------------------------------


@pytest.fixture(scope="module")
def scratch_db() -> str:
    if not pg.reachable():
        reason = f"the snapshot tests need PostgreSQL at {pg.HOST}:{pg.PORT}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    pg.create_scratch_db()
    return pg.DB_URL


@pytest.fixture
def db_target(scratch_db, monkeypatch) -> Target:
    monkeypatch.setenv("LOTOOPS_TARGET_TEST_PG_PASSWORD", PASSWORD)
    return Target.objects.create(
        name="lotolink-db",
        kind="postgres",
        url=scratch_db,
        secret_env="LOTOOPS_TARGET_TEST_PG_PASSWORD",
    )


@pytest.fixture
def restored_db(scratch_db):
    pg.query(f'DROP DATABASE IF EXISTS "{RESTORED_DB}" WITH (FORCE)')
    pg.query(f'CREATE DATABASE "{RESTORED_DB}"')
    yield f"postgres://postgres@{pg.HOST}:{pg.PORT}/{RESTORED_DB}"
    pg.query(f'DROP DATABASE IF EXISTS "{RESTORED_DB}" WITH (FORCE)')


@pytest.fixture
def sessions():
    opened = pg.Sessions()
    yield opened
    opened.close()


def rows(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return {
            "plays": conn.execute(
                "SELECT id, status, created_at, note FROM plays ORDER BY id"
            ).fetchall(),
            "odd": conn.execute('SELECT count(*) FROM "odd""name"').fetchall(),
            "function": conn.execute(
                "SELECT count(*) FROM pg_proc WHERE proname = 'lotoops_sneaky'"
            ).fetchall(),
        }


def snapshot_step() -> RunbookStep:
    from diagnostics.seed import seed_runbooks

    seed_runbooks()
    return RunbookStep.objects.get(key="sec.db_snapshot")


def test_the_snapshot_step_is_an_action_with_a_long_timeout(runbook):
    step = snapshot_step()
    assert step.available and step.is_action and step.timeout_seconds == 600
    assert step.probe_class() is postgres.Snapshot


def test_the_plan_says_what_it_dumps_where(db_target):
    plan = get_probe("postgres.snapshot").build(db_target, {}, timeout=10).plan()
    assert plan.startswith(f"pg_dump the database {pg.DB} (")
    assert plan.endswith(
        f"on lotolink-db ({pg.HOST}:{pg.PORT}) (custom format) and store it on the incident"
    )


def test_pg_dump_matches_the_server_major_version(scratch_db):
    server = pg.query("SELECT current_setting('server_version_num')::int AS v")[0]["v"] // 10000
    binary, major = postgres.pg_dump_binary(server)
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert major == server and f"(PostgreSQL) {server}." in version


def test_an_older_pg_dump_is_refused_clearly():
    with pytest.raises(ProbeError, match=r"pg_dump \d+ cannot dump a PostgreSQL 99 server"):
        postgres.pg_dump_binary(99)


def test_a_snapshot_through_the_engine_restores_to_the_same_rows(
    store, db_target, restored_db, responder, caplog, monkeypatch, tmp_path
):
    caplog.set_level(logging.DEBUG)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    incident = factories.declare(actor=responder, category="security", title="Breach")
    run = confirm_and_run(incident, snapshot_step(), db_target, responder)
    assert run.status == RunStatus.SUCCEEDED, run.summary
    assert run.summary.startswith(f"pg_dump of {pg.DB} on lotolink-db: ")
    assert run.result["format"] == "custom" and run.result["bytes"] > 0
    (file,) = EvidenceFile.objects.filter(incident=incident)
    assert file.name.startswith(f"lotolink-db-{pg.DB}-") and file.name.endswith(".dump")
    dump = store / file.path
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == file.sha256
    assert file.created_by == responder and file.check_run_id == run.pk
    assert not list(temp.iterdir())  # the temporary dump is gone

    subprocess.run(
        ["pg_restore", "--no-owner", f"--dbname={restored_db}", str(dump)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert rows(restored_db) == rows(pg.DB_URL)
    assert len(rows(restored_db)["plays"]) == 6

    # The planted password is nowhere: output, result, timeline, evidence rows, logs.
    seen = [
        run.output,
        run.summary,
        run.plan,
        json.dumps(run.result),
        json.dumps(run.params),
        *incident.timeline.values_list("message", flat=True),
        *(json.dumps(d) for d in incident.timeline.values_list("data", flat=True)),
        json.dumps(list(EvidenceFile.objects.values()), default=str),
        caplog.text,
    ]
    assert run.output and "pg_dump: " in run.output  # pg_dump's own messages streamed
    assert not [text for text in seen if PASSWORD in text]
    assert "PGPASSWORD" not in os.environ


def test_the_password_goes_only_to_the_child_environment(db_target):
    url = pg.DB_URL.replace("postgres@", "postgres:in-the-url-too@")
    probe = get_probe("postgres.snapshot").build(
        Target(name="db", kind="postgres", url=url, secret_env="LOTOOPS_TARGET_TEST_PG_PASSWORD"),
        {},
        timeout=10,
    )
    conninfo = probe.conninfo()
    assert "in-the-url-too" not in conninfo and PASSWORD not in conninfo
    assert f"dbname={pg.DB}" in conninfo and "application_name=lotoops-probe" in conninfo
    assert probe.child_env()["PGPASSWORD"] == PASSWORD
    assert "PGPASSWORD" not in os.environ


def test_a_password_meant_for_something_else_never_reaches_pg_dump(scratch_db, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "the-workers-own")
    no_secret = Target(name="db", kind="postgres", url=pg.DB_URL)
    env = get_probe("postgres.snapshot").build(no_secret, {}, timeout=10).child_env()
    assert "PGPASSWORD" not in env and env["LC_MESSAGES"] == "C"


def test_a_held_lock_fails_clearly_and_leaves_no_file(db_target, sessions, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(postgres, "PG_DUMP_LOCK_WAIT", 0.3)
    holder = sessions.open(autocommit=False)
    holder.execute("LOCK TABLE plays IN ACCESS EXCLUSIVE MODE")
    lines: list[str] = []
    probe = get_probe("postgres.snapshot").build(db_target, {}, timeout=20, emit=lines.append)
    with pytest.raises(
        ProbeError,
        match=r"could not lock table public\.plays within 0\.3 s: another session holds it",
    ):
        probe.run()
    assert not list(tmp_path.glob("lotoops-snapshot-*"))


def test_a_dump_past_its_timeout_is_killed_and_leaves_no_file(
    db_target, sessions, monkeypatch, tmp_path
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    holder = sessions.open(autocommit=False)
    holder.execute("LOCK TABLE plays IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    probe = get_probe("postgres.snapshot").build(db_target, {}, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ProbeTimeout, match=r"did not finish within 1\.5 s"):
        probe.run()
    assert time.monotonic() - started < 8
    assert not list(tmp_path.glob("lotoops-snapshot-*"))
    assert not _processes_mentioning(str(tmp_path))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found
