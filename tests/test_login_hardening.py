"""Login throttling (django-axes) on the site and admin logins, and password rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.utils import timezone

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def rosa(db):
    return factories.UserFactory(username="rosa", is_staff=True)


def _login(client, path: str, password: str):
    return client.post(path, {"username": "rosa", "password": password})


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_after_repeated_wrong_passwords_even_the_right_one_is_refused(client, rosa, path):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, path, "wrong guess").status_code == 200  # the form again
    assert _login(client, path, "wrong guess").status_code == 429  # the last allowed
    response = _login(client, path, factories.PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # still logged out


def test_the_lock_lifts_after_the_cool_off(client, rosa):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", "wrong guess")
    assert _login(client, "/login/", factories.PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = _login(client, "/login/", factories.PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(rosa.pk)


def test_a_few_mistakes_then_the_right_password_logs_in(client, rosa):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "/login/", "wrong guess")
    assert _login(client, "/login/", factories.PASSWORD).status_code == 302


@pytest.mark.parametrize("password", ["rosa.martinez", "password123", "12345678901", "short1!"])
def test_passwords_like_the_username_common_numeric_or_short_are_refused(password):
    user = factories.UserFactory.build(username="rosa.martinez", email="rosa@lotolink.test")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_long_unrelated_passphrase_is_accepted():
    user = factories.UserFactory.build(username="rosa.martinez")
    validate_password("tangerine orbit lantern 42", user)


def test_guesses_against_one_user_do_not_lock_another_from_the_same_address(client, rosa):
    """Behind a shared (untrusted) proxy every client has its address: the lock is per
    username and address, so guessing rosa's password does not lock out ana."""
    factories.UserFactory(username="ana")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", "wrong guess")
    assert _login(client, "/login/", factories.PASSWORD).status_code == 429
    other = client.post("/login/", {"username": "ana", "password": factories.PASSWORD})
    assert other.status_code == 302


@pytest.fixture
def run_command_server(transactional_db):
    """The app under uvicorn with the proxy options of the run command's web server
    (lotoops/embedded.py), parsed by uvicorn's own command line, on a loopback port."""
    import socket
    import threading
    import time

    import uvicorn
    from uvicorn.main import main as uvicorn_cli

    from lotoops.asgi import application
    from lotoops.embedded import child_commands

    web = child_commands("python", "127.0.0.1", 8000, {})["web"]
    options = uvicorn_cli.make_context("uvicorn", web[web.index("uvicorn") + 1 :]).params
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        application,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
        proxy_headers=options["proxy_headers"],
        forwarded_allow_ips=options["forwarded_allow_ips"],
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=5)


def test_a_rotating_x_forwarded_for_from_loopback_does_not_escape_the_lockout(
    run_command_server, rosa
):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: every guess
    from this machine could then claim a new address and never be locked out."""
    import re

    import httpx

    with httpx.Client(base_url=run_command_server, timeout=10) as browser:
        form = browser.get("/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        answers = []
        for n in range(settings.AXES_FAILURE_LIMIT + 2):
            answers.append(
                browser.post(
                    "/login/",
                    data={
                        "username": "rosa",
                        "password": "wrong guess",
                        "csrfmiddlewaretoken": token,
                    },
                    headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
                ).status_code
            )
    assert answers[-1] == 429, answers
    assert AccessAttempt.objects.filter(username="rosa", ip_address="127.0.0.1").exists()
