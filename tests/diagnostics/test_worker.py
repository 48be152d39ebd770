"""Check runs on a real Celery worker over Redis: a worker killed mid-run never
leaves its run "running"; the run is retried and finishes."""

from __future__ import annotations

import time

import pytest

from diagnostics import services
from diagnostics.models import CheckRun, RunStatus
from incidents.models import EventKind
from tests import factories
from tests.diagnostics.conftest import step

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_real_worker_runs_checks_in_parallel_and_streams_output(
    start_worker, responder, testbook, api_target
):
    incident = factories.declare(actor=responder, category="database", title="Slow queries")
    diag = step("diag")
    diag.params = {"lines": 10, "delay": 0.1}
    diag.save()
    start_worker(concurrency=2, include="tests.diagnostics.engine_probes")
    started = time.monotonic()
    runs = services.run_all_diagnostics(incident, testbook, actor=responder)
    seen_partial = wait_for(
        lambda: (
            CheckRun.objects.filter(pk=runs[0].pk, status=RunStatus.RUNNING)
            .exclude(output="")
            .exists()
            or CheckRun.objects.get(pk=runs[0].pk).status == RunStatus.SUCCEEDED
        ),
        10,
        "output while running",
    )
    assert seen_partial
    wait_for(
        lambda: all(r.status == RunStatus.SUCCEEDED for r in CheckRun.objects.all()),
        20,
        "both runs",
    )
    assert time.monotonic() - started < 15
    assert incident.timeline.filter(kind=EventKind.CHECK_RESULT).count() == 2


def sessions_opened() -> int:
    """PostgreSQL sessions ever opened on the test database (pg_stat_database)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_worker_keeps_its_connections_between_runs(start_worker, responder, testbook, api_target):
    """Celery's Django fix-up closed the psycopg pool around every task in a prefork
    process: each run connected anew. Now 12 runs on one pool process reuse its pool."""
    diag = step("diag")
    start_worker(concurrency=1, include="tests.diagnostics.engine_probes")
    warm = factories.declare(actor=responder, category="database", title="Warm-up")
    (first,) = services.request_check(warm, diag, actor=responder)
    wait_for(lambda: CheckRun.objects.get(pk=first.pk).finished_at, 20, "the first run")
    time.sleep(0.5)  # the stats are flushed by each backend when it goes idle
    before = sessions_opened()
    runs = []
    for n in range(12):
        incident = factories.declare(actor=responder, category="database", title=f"Reuse {n}")
        runs += services.request_check(incident, diag, actor=responder)
    wait_for(
        lambda: (
            not CheckRun.objects.filter(
                pk__in=[r.pk for r in runs], finished_at__isnull=True
            ).exists()
        ),
        30,
        "the 12 runs",
    )
    assert all(
        r.status == RunStatus.SUCCEEDED
        for r in CheckRun.objects.filter(pk__in=[r.pk for r in runs])
    )
    time.sleep(1)
    # The test's own connection and at most a couple the pool adds: not one per run.
    assert sessions_opened() - before <= 3


def test_a_worker_killed_mid_run_leaves_no_run_running(
    start_worker, responder, testbook, api_target, settings
):
    settings.CHECK_RUN_GRACE = 1
    incident = factories.declare(actor=responder, category="database", title="OOM on the worker")
    diag = step("diag")
    diag.params = {"lines": 20, "delay": 0.1}
    diag.timeout_seconds = 4
    diag.save()
    worker = start_worker(concurrency=1, include="tests.diagnostics.engine_probes")
    (run,) = services.request_check(incident, diag, actor=responder)
    wait_for(
        lambda: (
            CheckRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exclude(output="").exists()
        ),
        10,
        "the run to start",
    )
    worker.kill()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # nobody knows yet ...
    # ... until its heartbeat is older than the step's timeout plus the grace.
    reaped = wait_for(lambda: services.reap_stale_runs(), 10, "the reaper to notice")
    assert reaped == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    lost = incident.timeline.filter(kind=EventKind.CHECK_RESULT).last()
    assert f"worker {worker.hostname} lost mid-run; retrying" in lost.message
    # A fresh worker takes the retry and finishes it.
    start_worker(concurrency=1, include="tests.diagnostics.engine_probes")
    wait_for(lambda: CheckRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 20, "the retry")
    run.refresh_from_db()
    assert run.attempts == 2
    assert run.output.count("line 0") == 2  # both attempts' output, in order


def test_run_output_reaches_the_open_page_within_a_second(
    start_worker, asgi_server, responder, testbook, api_target
):
    """The worker writes output lines; the incident's SSE stream (woken by Redis)
    delivers each within 1 s of the worker flushing it."""
    import httpx
    from django.utils import timezone

    from tests.incidents.test_stream import session_cookie

    incident = factories.declare(actor=responder, category="database", title="Live output")
    diag = step("diag")
    diag.params = {"lines": 6, "delay": 0.5}
    diag.save()
    start_worker(concurrency=1, include="tests.diagnostics.engine_probes")
    last = incident.timeline.last().pk
    url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    lags: list[float] = []
    with httpx.stream(
        "GET", url, params={"after": last}, cookies=session_cookie(responder), timeout=10
    ) as response:
        events = sse_events_any(response)
        (run,) = services.request_check(incident, diag, actor=responder)
        seen = 0
        for event in events:
            if event.get("event") != "run" or f'id="check-run-{run.pk}"' not in event["data"]:
                continue
            count = event["data"].count("line ")
            if count > seen:
                seen = count
                flushed = CheckRun.objects.get(pk=run.pk).heartbeat_at
                lags.append((timezone.now() - flushed).total_seconds())
            if seen >= 6:
                break
    assert seen == 6
    assert max(lags) < 1.0, lags


def sse_events_any(response):
    """Like sse_events, but also yields id-less messages (run output)."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        event[field] = event[field] + "\n" + value if field in event else value
