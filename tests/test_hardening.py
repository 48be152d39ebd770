"""Hardening across the site: no caching of what a signed-in person sees, the CSP's
base-uri and object-src, sessions that end (an age and an idle limit)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from incidents import evidence

pytestmark = pytest.mark.django_db

NO_STORE = {"no-store", "private"}


def directives(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",") if part.strip()}


# --- Cache-Control ------------------------------------------------------------------


def test_pages_partials_exports_and_evidence_are_never_stored(
    client, responder, incident, settings, tmp_path
):
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    source = tmp_path / "log.txt"
    source.write_bytes(b"a line of evidence\n")
    file = evidence.store_file(
        incident, name="log.txt", source_path=source, content_type="text/plain", actor=responder
    )
    client.force_login(responder)
    answers = {
        "page": client.get("/"),
        "partial": client.get("/", headers={"HX-Request": "true"}),
        "incident": client.get(incident.get_absolute_url()),
        "export": client.get(reverse("incidents:export_md", args=[incident.pk])),
        "evidence": client.get(reverse("incidents:evidence_download", args=[incident.pk, file.pk])),
    }
    for name, response in answers.items():
        assert response.status_code == 200, name
        assert directives(response) >= NO_STORE, name


def test_the_api_and_metrics_answers_are_never_stored(client, responder, settings):
    from api import tokens

    _, token = tokens.issue(responder, "test")
    settings.METRICS_TOKEN = "metrics-token-4f1b"
    api = client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {token}"})
    metrics = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-4f1b"})
    assert api.status_code == 200 and directives(api) >= NO_STORE
    assert metrics.status_code == 200 and directives(metrics) >= NO_STORE


def test_static_files_and_the_health_probe_keep_their_own_caching(client):
    assert "no-store" not in directives(client.get("/static/vendor/htmx-2.0.11.min.js"))
    assert "no-store" not in directives(client.get("/readyz"))


# --- CSP ----------------------------------------------------------------------------


def test_the_csp_forbids_base_and_plugins(client):
    policy = client.get("/login/")["Content-Security-Policy"]
    rules = {rule.split()[0]: rule.split()[1:] for rule in policy.split(";") if rule.strip()}
    assert rules["base-uri"] == ["'none'"]
    assert rules["object-src"] == ["'none'"]


# --- sessions -----------------------------------------------------------------------


def logged_out(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/")


def test_an_idle_session_is_logged_out_at_its_next_request(client, responder, settings):
    client.force_login(responder)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert client.get("/").status_code == 200
    idle = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT)
    with time_machine.travel(start + idle + timedelta(seconds=1), tick=False):
        assert logged_out(client.get("/"))
        assert logged_out(client.get("/"))  # for good: the session was flushed
    assert "_auth_user_id" not in client.session


def test_requests_keep_a_session_alive_until_its_maximum_age(client, responder, settings):
    client.force_login(responder)
    start = timezone.now()
    step = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT * 0.75)
    at = start
    while at - start + step < timedelta(seconds=settings.SESSION_MAX_AGE):
        with time_machine.travel(at, tick=False):
            assert client.get("/").status_code == 200, at - start
        at += step
    with time_machine.travel(start + timedelta(seconds=settings.SESSION_MAX_AGE + 1), tick=False):
        assert logged_out(client.get("/"))


def test_polls_of_an_open_page_are_not_activity(client, responder, settings):
    client.force_login(responder)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert client.get("/").status_code == 200
    idle = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT)
    poll = {"HX-Request": "true", "X-LotoOps-Background": "1"}
    with time_machine.travel(start + idle * 0.9, tick=False):
        assert client.get("/", headers=poll).status_code == 200  # served, not counted
    with time_machine.travel(start + idle + timedelta(seconds=1), tick=False):
        assert logged_out(client.get("/"))


def test_the_defaults_are_twelve_hours_and_one_hour():
    from lotoops import settings as project

    assert project.SESSION_MAX_AGE == 12 * 3600 and project.SESSION_IDLE_TIMEOUT == 3600
    assert project.SESSION_COOKIE_AGE == 12 * 3600


def test_open_live_streams_of_an_idle_session_end_at_the_recheck(client, responder, settings):
    """The streams' periodic re-check treats an idle session as ended: an open page
    (its stream, reconnected every SSE_MAX_DURATION) does not keep it alive."""
    from incidents.views.stream import signed_in

    client.force_login(responder)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert client.get("/").status_code == 200
    follower = SimpleNamespace(session_key=client.session.session_key, user_id=responder.pk)
    idle = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT)
    with time_machine.travel(start + idle * 0.9, tick=False):
        assert signed_in([follower])
    with time_machine.travel(start + idle + timedelta(seconds=1), tick=False):
        assert not signed_in([follower])


# --- bad bearer tokens --------------------------------------------------------------


@pytest.fixture
def throttled(settings):
    settings.BAD_TOKEN_LIMIT = 3
    settings.BAD_TOKEN_WINDOW = 60
    settings.METRICS_TOKEN = "metrics-token-4f1b"


def good_headers(kind: str, responder) -> dict[str, str]:
    if kind == "api":
        from api import tokens

        return {"Authorization": f"Bearer {tokens.issue(responder, 'test')[1]}"}
    if kind == "hooks":
        from alerts import tokens

        return {"Authorization": f"Bearer {tokens.issue('am')[1]}"}
    return {"Authorization": "Bearer metrics-token-4f1b"}


def call(client, kind: str, headers: dict[str, str], address: str):
    if kind == "hooks":
        return client.post(
            "/hooks/alertmanager/",
            {"version": "4", "status": "firing", "alerts": []},
            content_type="application/json",
            headers=headers,
            REMOTE_ADDR=address,
        )
    path = "/api/v1/incidents" if kind == "api" else "/metrics"
    return client.get(path, headers=headers, REMOTE_ADDR=address)


@pytest.mark.parametrize("kind", ["api", "hooks", "metrics"])
def test_bad_tokens_past_the_limit_are_429_yet_a_good_token_still_works(
    client, responder, throttled, kind
):
    address = {"api": "198.51.100.1", "hooks": "198.51.100.2", "metrics": "198.51.100.3"}[kind]
    bad = {"Authorization": "Bearer lta_not-a-real-token"}
    assert [call(client, kind, bad, address).status_code for _ in range(3)] == [401] * 3
    refused = call(client, kind, bad, address)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
    good = call(client, kind, good_headers(kind, responder), address)
    # Let in (the empty alert group is then refused as a payload, not for its token).
    assert good.status_code == (400 if kind == "hooks" else 200), good.content
    # Another address is not affected.
    assert call(client, kind, bad, "198.51.100.9").status_code == 401
