"""The dashboard's live stream, against the real ASGI app under uvicorn: an incident
declared or changed anywhere says "changed" to every open dashboard within a second
of its commit (Redis or polling), notes and check output do not, a burst of changes
is at most two messages a second, and a logged-out session's stream ends."""

from __future__ import annotations

import time

import httpx
import pytest
from django.test import Client

from incidents import live, services
from incidents.access import dashboard_position
from incidents.models import Category
from tests import factories
from tests.incidents.live_helpers import session_cookie, sse_events
from tests.incidents.test_stream import in_thread, take, wake_mode  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def open_dashboard(server, cookies, **kwargs):
    url = f"{server.url}/dashboard/stream/"
    return httpx.stream("GET", url, cookies=cookies, timeout=httpx.Timeout(10.0), **kwargs)


def wait_until_watching(mode: str) -> None:
    """Until the server's hub watches (with Redis: subscribed): what commits from then
    on must arrive within the second; before, the stream catches up by its first poll."""
    deadline = time.monotonic() + 10
    while not any(
        hub.mode == mode and live.DASHBOARD in hub.feeds for hub in list(live.Hub._hubs.values())
    ):
        assert time.monotonic() < deadline, f"the hub never started watching ({mode})"
        time.sleep(0.02)


def test_a_declaration_elsewhere_reaches_an_open_dashboard_within_a_second(
    asgi_server,
    wake_mode,  # noqa: F811
    responder,
    other_responder,
):
    factories.declare(actor=responder, title="Already open")
    after = dashboard_position(responder)
    committed: list[float] = []

    def declare() -> None:
        incident = factories.declare(actor=other_responder, title="Banca oeste down")
        committed.append(time.monotonic())
        declared.append(incident)

    declared: list = []
    with open_dashboard(asgi_server, session_cookie(responder), params={"after": after}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
        wait_until_watching(wake_mode)
        writer = in_thread(declare, delay=0.2)
        event = next(events)
        received = time.monotonic()
    writer.join()  # the event can arrive before declare() has returned
    assert event["event"] == "changed"
    assert after < int(event["id"]) <= dashboard_position(responder)
    assert received - committed[0] < 1.0


def test_what_was_missed_before_connecting_is_said_at_once(asgi_server, responder):
    after = dashboard_position(responder)
    factories.declare(actor=responder, title="Declared while the page loaded")
    with open_dashboard(asgi_server, session_cookie(responder), params={"after": after}) as r:
        (event,) = take(sse_events(r), 1)
    assert event["event"] == "changed"
    assert int(event["id"]) == dashboard_position(responder) > after


def test_notes_do_not_wake_the_dashboard_a_status_change_does(
    asgi_server,
    wake_mode,  # noqa: F811
    responder,
):
    incident = factories.declare(actor=responder)
    after = dashboard_position(responder)
    seen: list[dict[str, str]] = []
    with open_dashboard(asgi_server, session_cookie(responder), params={"after": after}) as r:
        events = sse_events(r)
        wait_until_watching(wake_mode)
        in_thread(lambda: services.add_note(incident, "Looking at the pool", actor=responder), 0.2)
        started = time.monotonic()
        in_thread(lambda: services.acknowledge_incident(incident, actor=responder), 1.5)
        seen.append(next(events))
    assert time.monotonic() - started >= 1.4  # not on the note, which came first
    assert int(seen[0]["id"]) == dashboard_position(responder) > after


# A burst of writes while the in-process server's streams read the incidents: on
# SQLite's in-memory test database (shared cache) a reader hits "database table is
# locked" instead of waiting; the burst is measured on PostgreSQL.
@pytest.mark.postgres
def test_a_burst_of_changes_is_at_most_two_messages_a_second(asgi_server, responder):
    after = dashboard_position(responder)
    with open_dashboard(asgi_server, session_cookie(responder), params={"after": after}) as r:
        events = sse_events(r)

        def burst() -> None:
            for n in range(12):
                incident = factories.declare(actor=responder, title=f"Storm {n}")
                services.acknowledge_incident(incident, actor=responder)

        writer = in_thread(burst)
        got = [next(events)]
        started = time.monotonic()
        writer.join()
        last = dashboard_position(responder)
        while int(got[-1]["id"]) < last:
            got.append(next(events))
        spent = time.monotonic() - started
    # 24 changes, a handful of messages at least half a second apart, the last current.
    assert len(got) <= 2 * spent + 2
    assert int(got[-1]["id"]) == last


def test_a_stream_ends_when_its_session_is_logged_out(asgi_server, responder, settings):
    settings.SSE_ACCESS_RECHECK = 0.2
    from django.contrib.sessions.models import Session

    cookies = session_cookie(responder)
    with open_dashboard(
        asgi_server, cookies, params={"after": dashboard_position(responder)}
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        Session.objects.filter(session_key=cookies["sessionid"]).delete()
        started = time.monotonic()
        rest = list(lines)  # the server ends the stream
    assert time.monotonic() - started < 5
    assert not [line for line in rest if line.startswith("event:")]


def test_a_restricted_incident_changing_wakes_no_dashboard_that_may_not_see_it(
    asgi_server,
    wake_mode,  # noqa: F811
    responder,
    viewer,
):
    """The viewer may not see security incidents: their declaration and changes send
    the viewer's dashboard nothing, and the position it sees (the SSE id, the page's
    `after=`) does not move for them, so it tells nothing of them either."""
    # Earlier restricted activity: global event ids run ahead of what the viewer sees.
    earlier = factories.declare(actor=responder, title="Earlier", category=Category.SECURITY)
    services.acknowledge_incident(earlier, actor=responder)
    after = dashboard_position(viewer)
    assert live.dashboard_latest() > after + 1  # the ids the old stream sent
    client = Client()
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert f"?after={after}" in page

    def secret_then_public() -> None:
        secret = factories.declare(actor=responder, title="Breach", category=Category.SECURITY)
        services.acknowledge_incident(secret, actor=responder)
        time.sleep(1.5)  # time for a wrong "changed" to arrive first
        public.append(
            factories.declare(actor=responder, title="Banca oeste down", category=Category.BANCA)
        )

    public: list = []
    with open_dashboard(asgi_server, session_cookie(viewer), params={"after": after}) as r:
        events = sse_events(r)
        wait_until_watching(wake_mode)
        writer = in_thread(secret_then_public, delay=0.2)
        first = next(events)
    writer.join()
    shown = public[0].timeline.filter(kind__in=live.DASHBOARD_KINDS).count()
    # Woken by the public declaration only, its id counting only what the viewer sees.
    assert int(first["id"]) == after + shown == dashboard_position(viewer)
    assert dashboard_position(responder) > dashboard_position(viewer)


def test_without_a_session_there_is_no_stream(asgi_server):
    response = httpx.get(f"{asgi_server.url}/dashboard/stream/", timeout=5)
    assert response.status_code == 302 and "/login/" in response.headers["location"]


def test_a_bad_after_is_a_400(asgi_server, responder):
    with open_dashboard(asgi_server, session_cookie(responder), params={"after": "x"}) as r:
        assert r.status_code == 400


def test_the_dashboard_page_starts_its_stream_where_it_was_drawn(client, responder):
    incident = factories.declare(actor=responder)
    services.acknowledge_incident(incident, actor=responder)
    client.force_login(responder)
    html = client.get("/").content.decode()
    assert f'sse-connect="/dashboard/stream/?after={dashboard_position(responder)}"' in html
    assert 'hx-trigger="every 20s, sse:changed"' in html


def test_the_access_recheck_reads_every_session_in_one_query(
    responder, django_assert_max_num_queries
):
    """Hundreds of open pages, one per viewer, are re-checked every few seconds: all
    their sessions in one query and their users in one more, not one per page."""
    from types import SimpleNamespace

    from django.contrib.sessions.models import Session
    from django.test import Client

    from incidents.views.stream import signed_in

    followers = []
    for n in range(30):
        user = factories.UserFactory(username=f"viewer{n}")
        browser = Client()
        browser.force_login(user)
        followers.append(SimpleNamespace(session_key=browser.session.session_key, user_id=user.pk))
    Session.objects.filter(session_key=followers[0].session_key).delete()  # logged out
    followers.append(SimpleNamespace(session_key=None, user_id=responder.pk))  # no session

    with django_assert_max_num_queries(2):
        users = signed_in(followers)

    assert id(followers[0]) not in users and id(followers[-1]) not in users
    assert [users[id(f)].pk for f in followers[1:-1]] == [f.user_id for f in followers[1:-1]]


def test_many_open_dashboards_redraw_less_often_and_not_all_at_once(settings):
    from incidents.views.stream import DashboardFollower

    settings.DASHBOARD_LIVE_FETCHES = 10
    follower = DashboardFollower.__new__(DashboardFollower)
    before = live.active_streams[live.DASHBOARD]
    try:
        for open_here, interval in ((1, 0.5), (5, 0.5), (40, 4.0), (100, 10.0), (1000, 20.0)):
            live.active_streams[live.DASHBOARD] = open_here
            assert follower.min_interval == interval
            pauses = [follower.spread() for _ in range(200)]
            assert min(pauses) >= 0 and max(pauses) <= interval - 0.5
    finally:
        live.active_streams[live.DASHBOARD] = before


def test_a_change_reaches_many_open_dashboards_spread_over_their_interval(
    asgi_server, responder, settings
):
    """12 dashboards open, 4 list fetches a second allowed: each waits up to 2.5 s at
    random before its "changed", so their fetches do not land in one instant."""
    import threading

    settings.DASHBOARD_LIVE_FETCHES = 4  # 12 open: one "changed" per 3 s each
    after = dashboard_position(responder)
    cookies = session_cookie(responder)
    arrived: list[float] = []
    lock = threading.Lock()

    def watch() -> None:
        with open_dashboard(asgi_server, cookies, params={"after": after}) as r:
            next(sse_events(r))
            with lock:
                arrived.append(time.monotonic())

    watchers = [threading.Thread(target=watch) for _ in range(12)]
    for watcher in watchers:
        watcher.start()
    deadline = time.monotonic() + 10
    while live.active_streams[live.DASHBOARD] < 12:
        assert time.monotonic() < deadline, "the 12 dashboards did not open"
        time.sleep(0.05)
    wait_until_watching("redis" if settings.REDIS_URL else "poll")
    factories.declare(actor=responder, title="Seen by twelve")
    declared = time.monotonic()
    for watcher in watchers:
        watcher.join(timeout=15)
    assert len(arrived) == 12
    assert max(arrived) - declared < 4.0  # within the 2.5 s spread, plus the wake-up
    assert max(arrived) - min(arrived) > 0.3  # spread, not all in one instant
