"""The live timeline over SSE, against the real ASGI app under uvicorn: events
after the last id seen, within 1 s of commit, replay after a dropped connection
(nothing lost, nothing doubled), and a closed tab ends the server's generator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from incidents import live, services
from tests import factories
from tests.conftest import redis_url
from tests.incidents.live_helpers import session_cookie, sse_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["poll", pytest.param("redis", marks=pytest.mark.redis)])
def wake_mode(request, settings) -> str:
    """Streams woken by polling the database, or by Redis pub/sub (polling slowed
    down to 30 s so only Redis can make the 1 s deadline)."""
    if request.param == "redis":
        settings.REDIS_URL = redis_url()
        settings.SSE_POLL_INTERVAL = 30
    else:
        settings.REDIS_URL = ""
        settings.SSE_POLL_INTERVAL = 0.2
    live.redis_client.cache_clear()
    return request.param


def take(events: Iterator[dict[str, str]], n: int) -> list[dict[str, str]]:
    return [next(events) for _ in range(n)]


def in_thread(fn, delay: float = 0.0) -> threading.Thread:
    """Run `fn` in another thread (its own DB connection, committed), like another browser."""

    def run() -> None:
        time.sleep(delay)
        try:
            fn()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def open_stream(server, incident, cookies, **kwargs):
    url = f"{server.url}/incidents/{incident.pk}/stream/"
    return httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(5.0), **kwargs)


def test_the_stream_sends_what_came_after_the_given_id(asgi_server, wake_mode, responder):
    incident = factories.declare(actor=responder)
    first = incident.timeline.get().seq
    notes = [services.add_note(incident, f"note {n}", actor=responder) for n in range(3)]
    cookies = session_cookie(responder)
    with open_stream(asgi_server, incident, cookies, params={"after": first}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = take(sse_events(response), 3)
    assert [int(e["id"]) for e in got] == [n.seq for n in notes]
    assert all(e["event"] == "timeline" for e in got)
    assert f'id="event-{notes[0].pk}"' in got[0]["data"]
    assert "note 0" in got[0]["data"]


def test_a_new_event_arrives_within_one_second_of_its_commit(
    asgi_server, wake_mode, responder, other_responder
):
    incident = factories.declare(actor=responder)
    last = incident.timeline.get().seq
    cookies = session_cookie(responder)
    committed: list[float] = []

    def acknowledge() -> None:
        services.acknowledge_incident(incident, actor=other_responder)
        committed.append(time.monotonic())

    with open_stream(asgi_server, incident, cookies, params={"after": last}) as response:
        events = sse_events(response)
        in_thread(acknowledge, delay=0.5)
        event = next(events)
        received = time.monotonic()
    assert "ben acknowledged" in event["data"]
    # The acknowledge also refreshes the header (out of band) for every open page.
    assert 'id="incident-header"' in event["data"] and 'hx-swap-oob="true"' in event["data"]
    assert received - committed[0] < 1.0


def test_a_dropped_connection_resumes_after_the_last_id_seen(asgi_server, wake_mode, responder):
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    with open_stream(asgi_server, incident, cookies) as response:
        seen = take(sse_events(response), 1)  # the declaration
    last = int(seen[-1]["id"])
    missed = [services.add_note(incident, f"while away {n}", actor=responder).seq for n in range(2)]

    # The browser's own reconnect sends Last-Event-ID ...
    with open_stream(
        asgi_server, incident, cookies, headers={"Last-Event-ID": str(last)}
    ) as response:
        events = sse_events(response)
        replayed = take(events, 2)
        in_thread(lambda: services.add_note(incident, "after reconnect", actor=responder), 0.2)
        newer = next(events)
    assert [int(e["id"]) for e in replayed] == missed
    assert "after reconnect" in newer["data"]

    # ... the htmx extension's re-created connection carries ?after= instead.
    with open_stream(asgi_server, incident, cookies, params={"after": missed[0]}) as response:
        events = sse_events(response)
        ids = [int(e["id"]) for e in take(events, 2)]
    assert ids == [missed[1], int(newer["id"])]


def test_a_bad_last_event_id_is_a_400(asgi_server, responder):
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    with open_stream(asgi_server, incident, cookies, params={"after": "abc"}) as response:
        assert response.status_code == 400


def test_closing_the_tab_ends_the_server_side_generator(asgi_server, responder, caplog):
    caplog.set_level("DEBUG", logger="incidents.live")
    incident = factories.declare(actor=responder)
    cookies = session_cookie(responder)
    assert live.active_streams[incident.pk] == 0
    with open_stream(asgi_server, incident, cookies) as response:
        # Keep the reader: a discarded generator would close the response at once.
        events = sse_events(response)
        next(events)
        assert live.active_streams[incident.pk] == 1, caplog.text
        events.close()
    deadline = time.monotonic() + 3
    while live.active_streams[incident.pk] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.active_streams[incident.pk] == 0
    assert f"timeline stream of incident {incident.pk} ended: client gone" in caplog.text


def test_the_stream_needs_login_and_access(asgi_server, responder, other_responder):
    secret = factories.declare(actor=responder, category="security", title="Leak")
    with open_stream(asgi_server, secret, {}) as response:
        assert response.status_code == 302
    with open_stream(asgi_server, secret, session_cookie(other_responder)) as response:
        assert response.status_code == 404
