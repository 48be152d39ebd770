"""Exactly once, in order, with writers in several processes.

Four processes append to one incident's timeline at the same time (notes through
the incident service, check results the way a worker records them: a transaction
that commits a little after writing its event) and a browser posts notes through a
second web process, while SSE clients follow the
incident on two web processes (the in-process server and a uvicorn subprocess),
woken by Redis. Every client must receive every event exactly once, in the
timeline's order, with no gap in the sequence. With ids as the SSE key (the old
design) clients lost events here: a transaction that took a lower id committed
after the stream had moved past it."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from incidents import live
from incidents.models import TimelineEvent
from tests import factories
from tests.conftest import redis_url
from tests.incidents.live_helpers import session_cookie, sse_events, start_writers, web_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]

WRITERS = 4
PER_WRITER = 60
HTTP_NOTES = 20


def post_notes(base: str, incident_pk: int, cookies: dict[str, str], start_at: float) -> None:
    """A responder's browser posting notes through a web process's form (session + CSRF)."""
    with httpx.Client(base_url=base, cookies=cookies, timeout=httpx.Timeout(10.0)) as browser:
        assert browser.get(f"/incidents/{incident_pk}/").status_code == 200
        time.sleep(max(0.0, start_at - time.time()))
        for n in range(HTTP_NOTES):
            answer = browser.post(
                f"/incidents/{incident_pk}/notes/",
                data={"text": f"from the browser {n}"},
                headers={"X-CSRFToken": browser.cookies["csrftoken"]},
            )
            assert answer.status_code == 302


def follow(url: str, cookies: dict[str, str], after: int, want: int, out: list[int]) -> None:
    """Read the stream until `want` events arrived or nothing came for 10 s (the
    streams send a keep-alive every second)."""
    try:
        with httpx.stream(
            "GET", url, params={"after": after}, cookies=cookies, timeout=httpx.Timeout(10.0)
        ) as response:
            for event in sse_events(response):
                out.append(int(event["id"]))
                if len(out) >= want:
                    return
    except httpx.ReadTimeout:
        return


def test_every_event_reaches_every_stream_once_in_order(asgi_server, settings, responder):
    settings.REDIS_URL = redis_url()
    settings.SSE_POLL_INTERVAL = 30  # only Redis wakes the streams up in time
    settings.SSE_KEEPALIVE = 1
    live.redis_client.cache_clear()
    incident = factories.declare(actor=responder, title="Everyone at once")
    start = incident.timeline.order_by("-seq").first().seq
    want = WRITERS * PER_WRITER + HTTP_NOTES
    cookies = session_cookie(responder)
    path = f"/incidents/{incident.pk}/stream/"

    with web_process(REDIS_URL=redis_url(), SSE_KEEPALIVE="1") as other_web:
        received: list[list[int]] = [[] for _ in range(4)]
        urls = [asgi_server.url, asgi_server.url, other_web, other_web]
        clients = [
            threading.Thread(target=follow, args=(url + path, cookies, start, want, out))
            for url, out in zip(urls, received, strict=True)
        ]
        for client in clients:
            client.start()
        time.sleep(1.0)  # every stream is open before the writers start
        start_at = time.time() + 2
        writers = start_writers(
            incident.pk, responder.pk, writers=WRITERS, count=PER_WRITER, start_at=start_at
        )
        browser = threading.Thread(
            target=post_notes, args=(other_web, incident.pk, dict(cookies), start_at)
        )
        browser.start()
        for writer in writers:
            assert writer.wait(timeout=60) == 0
        browser.join(timeout=60)
        for client in clients:
            client.join(timeout=30)

    stored = list(
        TimelineEvent.objects.filter(incident=incident, seq__gt=start)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert stored == list(range(start + 1, start + want + 1))
    for n, got in enumerate(received):
        missing = sorted(set(stored) - set(got))
        assert got == stored, f"client {n}: {len(got)} of {want}, missing {missing[:10]}"
