"""Panels redrawn live for each viewer, with that viewer's rights, and check
outcomes in words and colour, over the real SSE stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from incidents import services, timeline
from incidents.models import EventKind, Status
from incidents.views.stream import CSRF_PLACEHOLDER
from tests import factories
from tests.incidents.live_helpers import session_cookie, sse_events

# PostgreSQL: SQLite's in-memory test database (shared cache) makes a writer fail with
# "table is locked" while the stream's poll reads; the embedded default's file
# database (WAL) lets readers and a writer work at once.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _polling(settings) -> None:
    settings.REDIS_URL = ""
    settings.SSE_POLL_INTERVAL = 0.1


def collect(server, incident, user, after: int, n: int) -> tuple[threading.Thread, list[dict]]:
    """Read `n` events of the incident's stream as `user`, in another thread."""
    got: list[dict] = []
    url = f"{server.url}/incidents/{incident.pk}/stream/"
    cookies = session_cookie(user)
    opened = threading.Event()

    def run() -> None:
        with httpx.stream(
            "GET", url, params={"after": after}, cookies=cookies, timeout=httpx.Timeout(10.0)
        ) as response:
            opened.set()
            events: Iterator[dict] = sse_events(response)
            for _ in range(n):
                got.append(next(events))

    thread = threading.Thread(target=run)
    thread.start()
    opened.wait(10)
    return thread, got


def last_seq(incident) -> int:
    return incident.timeline.order_by("-seq").first().seq


def test_the_whos_told_card_keeps_each_viewers_controls(asgi_server, responder, viewer):
    incident = factories.declare(actor=responder)
    after = last_seq(incident)
    ana, ana_got = collect(asgi_server, incident, responder, after, 1)
    vic, vic_got = collect(asgi_server, incident, viewer, after, 1)
    services.set_incident_flags(incident, ["data_loss"], actor=responder)
    ana.join(10)
    vic.join(10)
    flags_form = f'action="/incidents/{incident.pk}/flags/"'
    ana_html, vic_html = ana_got[0]["data"], vic_got[0]["data"]
    assert 'id="whos-told"' in ana_html and 'id="whos-told"' in vic_html
    # The responder keeps the flags form, with a CSRF token of their own...
    assert flags_form in ana_html
    assert 'name="csrfmiddlewaretoken"' in ana_html and CSRF_PLACEHOLDER not in ana_html
    # ... the read-only viewer never gets it.
    assert flags_form not in vic_html


def test_resolution_brings_the_follow_up_checklists_and_the_post_mortem_card(
    asgi_server, responder
):
    incident = factories.declare(actor=responder)
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.MITIGATED, actor=responder, note="rolled back")
    after = last_seq(incident)
    thread, got = collect(asgi_server, incident, responder, after, 1)
    services.transition_incident(incident, Status.RESOLVED, actor=responder, note="fixed")
    thread.join(10)
    html = got[0]["data"]
    assert "Open the post-mortem" in html  # the post-mortem card, out of band
    assert 'id="checklist" hx-swap-oob="true"' in html
    assert "Within 24 hours" in html and "Within 1 week" in html
    # The severity form goes with the open status; the commander form stays.
    assert 'id="incident-forms" hx-swap-oob="true"' in html
    assert "Change severity" not in html and f"/incidents/{incident.pk}/commander/" in html


@pytest.mark.parametrize(
    ("data", "css", "word"),
    [
        ({"status": "succeeded", "outcome": "ok"}, "result-ok", "ok"),
        ({"status": "succeeded", "outcome": "warning"}, "result-warning", "warning"),
        ({"status": "succeeded", "outcome": "failing"}, "result-failing", "failing"),
        ({"status": "failed", "outcome": "error"}, "result-error", "error"),
        ({"status": "timed_out", "outcome": "error"}, "result-timed_out", "timed out"),
    ],
)
def test_a_check_results_outcome_shows_in_words_and_colour(asgi_server, responder, data, css, word):
    incident = factories.declare(actor=responder)
    thread, got = collect(asgi_server, incident, responder, last_seq(incident), 1)
    timeline.append_event(
        incident, EventKind.CHECK_RESULT, "db.locks on lotolink: 2 sessions waiting", data=data
    )
    thread.join(10)
    html = got[0]["data"]
    assert css in html
    assert f'<span class="outcome">{word}</span>' in html
