"""Requests in flight per web process are capped at what its database pool can serve
(lotoops/inflight.py): under overload a request waits a bounded time, then gets a clear
503 with Retry-After, never the pool's 10 s timeout or a 500; live streams do not count
once their response has started. Real uvicorn process, real app, test database."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time

import httpx
import psycopg
import pytest

from tests import factories
from tests.diagnostics import worker as worker_helpers
from tests.incidents.live_helpers import session_cookie, web_process

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POOL = 3
METRICS_TOKEN = "inflight-metrics-token-1"


@pytest.fixture
def web(runbook):
    with web_process(
        DATABASE_POOL_SIZE=str(POOL),
        WEB_QUEUE_WAIT="1",
        SSE_KEEPALIVE="1",
        REDIS_URL="",
        METRICS_TOKEN=METRICS_TOKEN,
    ) as url:
        yield url


def test_overload_waits_a_bounded_time_then_answers_503_never_500(web, responder):
    cookies = session_cookie(responder)
    assert httpx.get(f"{web}/", cookies=cookies, timeout=10).status_code == 200  # warm
    # Every logged-in page reads its session: while the table is locked, each request
    # Django admits holds a pooled connection and waits, as a slow page would.
    with psycopg.connect(worker_helpers.test_database_url()) as locker:
        locker.execute("LOCK TABLE django_session IN ACCESS EXCLUSIVE MODE")

        def get(_: int) -> tuple[int, float, httpx.Response]:
            started = time.monotonic()
            response = httpx.get(f"{web}/", cookies=cookies, timeout=30)
            return response.status_code, time.monotonic() - started, response

        with concurrent.futures.ThreadPoolExecutor(3 * POOL) as pool:
            futures = [pool.submit(get, n) for n in range(3 * POOL)]
            # The refused ones are answered while the lock is still held: the ones in
            # Django wait for it, the others are not waiting for a pooled connection.
            deadline = time.monotonic() + 20
            while sum(f.done() for f in futures) < 2 * POOL and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # none more than that
            refused_early = [f.result()[0] for f in futures if f.done()]
            locker.rollback()  # the slow requests may finish now
            results = [f.result() for f in futures]
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * POOL + [503] * (2 * POOL), statuses
    assert refused_early == [503] * (2 * POOL)
    for status, took, response in results:
        if status == 503:
            assert 0.9 < took < 4  # WEB_QUEUE_WAIT (1 s), not the pool's timeout (5 s)
            assert response.headers["Retry-After"] == "2"
            assert "LotoOps is busy" in response.text and "Traceback" not in response.text
    # Once the load is gone, everything is served again.
    assert httpx.get(f"{web}/", cookies=cookies, timeout=10).status_code == 200
    # /metrics counts the refusals of this process.
    metrics = httpx.get(
        f"{web}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert f"lotoops_web_requests_refused_total {2 * POOL}.0" in metrics.text
    assert "lotoops_web_requests_in_flight 1.0" in metrics.text  # itself


def test_open_live_streams_do_not_count_against_the_cap(web, responder):
    incident = factories.declare(actor=responder, title="Streams hold no permit")
    cookies = session_cookie(responder)
    with (
        httpx.Client(base_url=web, cookies=cookies, timeout=10) as client,
        contextlib.ExitStack() as stack,
    ):
        for _ in range(2 * POOL):
            response = stack.enter_context(
                client.stream("GET", f"/incidents/{incident.pk}/stream/")
            )
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        page = client.get(f"/incidents/{incident.pk}/")
        assert page.status_code == 200
        assert time.monotonic() - started < 1.0  # no wait for a permit
