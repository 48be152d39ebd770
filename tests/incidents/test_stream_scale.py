"""The live timeline with many open pages, against the real ASGI app under uvicorn:
streams hold no database connection while they wait, one Redis subscription
serves every stream of the process, one poll serves every incident without Redis,
and a stream ends when its viewer's access or session goes."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import Client
from guardian.shortcuts import assign_perm, remove_perm

from incidents import live, services
from tests import factories
from tests.conftest import redis_url
from tests.incidents.live_helpers import session_cookie, sse_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def prefix(settings) -> str:
    """Channels and Redis client names of this test only (pub/sub is server-wide)."""
    settings.SSE_CHANNEL_PREFIX = f"lotoops-test-{uuid.uuid4().hex[:8]}"
    live.redis_client.cache_clear()
    return settings.SSE_CHANNEL_PREFIX


@pytest.fixture
def with_redis(settings, prefix: str) -> str:
    settings.REDIS_URL = redis_url()
    settings.SSE_POLL_INTERVAL = 30
    return prefix


@pytest.fixture
def without_redis(settings, prefix: str) -> None:
    settings.REDIS_URL = ""
    settings.SSE_POLL_INTERVAL = 0.2


def our_redis_connections(prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    try:
        names = [c.get("name", "") for c in client.client_list()]
    finally:
        client.close()
    counts: dict[str, int] = {}
    for name in names:
        if name.startswith(prefix):
            counts[name] = counts.get(name, 0) + 1
    return counts


def our_pg_connections() -> int:
    """Connections to this test's database (other engineers use the same server)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def pool_size() -> int:
    return int(django_settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"])


@contextmanager
def open_streams(url: str, cookies: dict[str, str], n: int) -> Iterator[list[list[str]]]:
    """`n` streams held open (each has received its first bytes) by an asyncio client
    in another thread, until the block ends; then all closed. Yields each stream's
    received chunks."""
    ready, stop = threading.Event(), threading.Event()
    chunks: list[list[str]] = [[] for _ in range(n)]
    failure: list[BaseException] = []

    async def hold(client: httpx.AsyncClient, out: list[str], opened: asyncio.Event) -> None:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_text():
                out.append(chunk)
                opened.set()

    async def main() -> None:
        limits = httpx.Limits(max_connections=n + 5)
        async with httpx.AsyncClient(
            cookies=cookies, timeout=httpx.Timeout(30.0), limits=limits
        ) as client:
            events = [asyncio.Event() for _ in range(n)]
            tasks = [
                asyncio.create_task(hold(client, out, ev))
                for out, ev in zip(chunks, events, strict=True)
            ]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 30)
            finally:
                ready.set()
            while not stop.is_set() and not any(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise errors[0]

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    ready.wait(40)
    try:
        if failure:
            raise failure[0]
        yield chunks
    finally:
        stop.set()
        thread.join(30)
    if failure:
        raise failure[0]


def wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


@pytest.mark.postgres
@pytest.mark.redis
def test_connections_stay_flat_with_500_streams_opened_and_closed(
    asgi_server, with_redis, responder
):
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    idle_redis = our_redis_connections(with_redis)
    for _ in range(10):  # 500 streams, 50 at a time
        with open_streams(url, cookies, 50):
            during = our_redis_connections(with_redis)
            # One subscription for the whole process, whatever the number of streams.
            assert during.get(f"{with_redis}:listen") == 1, during
            assert our_pg_connections() <= pool_size()
    # The subscription closes with the last stream; the publisher may stay (one).
    assert wait_for(lambda: our_redis_connections(with_redis).get(f"{with_redis}:listen") is None)
    after = our_redis_connections(with_redis)
    assert sum(after.values()) <= sum(idle_redis.values()) + 1, after
    assert our_pg_connections() <= pool_size()


@pytest.mark.postgres
def test_fifty_streams_leave_the_pool_to_the_pages(asgi_server, without_redis, responder):
    """More open pages than the pool has connections: the pages still answer at once."""
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    stream_url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    assert pool_size() < 50
    with (
        open_streams(stream_url, cookies, 50) as streams,
        httpx.Client(
            base_url=asgi_server.url, cookies=cookies, timeout=httpx.Timeout(10.0)
        ) as browser,
    ):
        time.sleep(1.0)  # every stream has polled a few times
        # No thread per open page either (the request's own is let go).
        assert threading.active_count() < 30, threading.active_count()
        timings = {}
        for name, path in [("dashboard", "/"), ("incident", incident.get_absolute_url())]:
            started = time.monotonic()
            response = browser.get(path)
            timings[name] = time.monotonic() - started
            assert response.status_code == 200, name
        started = time.monotonic()
        response = browser.post(
            f"/incidents/{incident.pk}/notes/",
            data={"text": "still answering"},
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        )
        timings["note"] = time.monotonic() - started
        assert response.status_code == 302
        health = browser.get("/healthz")
        assert health.json()["checks"]["database"]["status"] == "ok"
        # ... and every one of the 50 pages receives the note.
        assert wait_for(lambda: all("still answering" in "".join(c) for c in streams))
    assert incident.timeline.filter(message="still answering").exists()
    assert max(timings.values()) < 2.0, timings


@contextmanager
def queries_of_other_threads() -> Iterator[list[str]]:
    """Every SQL statement the server's threads run (the test's own thread excepted),
    counted by a wrapper put on each database connection as it opens."""
    seen: list[str] = []
    me = threading.get_ident()

    def count(execute, sql, params, many, context):
        if threading.get_ident() != me:
            seen.append(sql)
        return execute(sql, params, many, context)

    def install(sender, connection, **kwargs) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(install, weak=False)
    try:
        yield seen
    finally:
        connection_created.disconnect(install)


def test_without_redis_the_streams_share_one_poll(asgi_server, without_redis, responder):
    """20 idle pages on one incident poll the database as one."""
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    with queries_of_other_threads() as queries, open_streams(url, cookies, 20):
        time.sleep(1.0)  # all open and settled
        before = len(queries)
        time.sleep(3.0)
        during = len(queries) - before
    # One shared poll every 0.2 s (two queries: the timeline, the check runs; ~30
    # in 3 s) and one access re-check: one page polling on its own would make 30
    # by itself, twenty 600.
    assert during < 80, during


def test_logging_out_ends_the_stream_within_5_seconds(asgi_server, without_redis, responder):
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    with httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(10.0)) as response:
        events = sse_events(response)
        next(events)  # the declaration: the stream is live
        browser = Client()
        browser.cookies["sessionid"] = cookies["sessionid"]
        assert browser.post("/logout/").status_code == 302
        logged_out = time.monotonic()
        rest = list(events)  # until the server ends the stream
        ended = time.monotonic() - logged_out
    assert rest == []
    assert ended < 5.0


def test_revoked_access_ends_the_stream_before_the_next_event(
    asgi_server, without_redis, responder, other_responder
):
    secret = factories.declare(actor=responder, category="security", title="Leak")
    assign_perm("incidents.view_incident", other_responder, secret)
    cookies = session_cookie(other_responder)
    url = f"{asgi_server.url}/incidents/{secret.pk}/stream/"
    with httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(10.0)) as response:
        events = sse_events(response)
        next(events)
        remove_perm("incidents.view_incident", other_responder, secret)
        revoked = time.monotonic()
        # An event right away: the stream re-checks before sending it.
        services.add_note(secret, "not for ben any more", actor=responder)
        rest = list(events)
        ended = time.monotonic() - revoked
    assert rest == []
    assert ended < 5.0
    # Reconnecting is refused too.
    with httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(5.0)) as response:
        assert response.status_code == 404


@pytest.mark.redis
def test_the_cache_keeps_one_redis_client_per_process(asgi_server, settings, prefix, responder):
    """Under ASGI Django makes a cache object per request; ours share one client. (With
    Django's own RedisCache this test saw 3 to 9 connections: one pool per request,
    closed whenever the garbage collector gets to it.)"""
    settings.CACHES = {
        "default": {
            "BACKEND": "lotoops.cache.SharedRedisCache",
            "LOCATION": redis_url(),
            "OPTIONS": {"socket_timeout": 2, "client_name": f"{prefix}:cache"},
        }
    }
    incident = factories.declare(actor=responder)
    with httpx.Client(cookies=session_cookie(responder), timeout=10.0) as browser:
        for _ in range(20):  # the incident page reads its events' HTML from the cache
            assert browser.get(asgi_server.url + incident.get_absolute_url()).status_code == 200
    assert our_redis_connections(prefix).get(f"{prefix}:cache", 0) == 1
