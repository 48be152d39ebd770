"""Shared fixtures: seeded runbook data, users, a live ASGI server, service gates.

Tests marked `postgres` or `redis` need those servers. Locally they skip when
the server is not configured; with CI=true they fail instead, so a missing
service can never pass silently.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection

from tests import factories

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _isolate_parallel_worker() -> None:
    """Under pytest-xdist, each worker process gets its own scratch databases and its
    own Redis database (pytest-django already suffixes the test database with the
    worker id), so two workers never see each other's incidents, cached renderings,
    wake-ups or probe sessions."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    index = int(worker[2:])
    probe_db = os.environ.get("LOTOOPS_PROBE_PG_DB", "lotoops_probe_pg")
    os.environ["LOTOOPS_PROBE_PG_DB"] = f"{probe_db}_{worker}"
    url = os.environ.get("REDIS_URL", "")
    if not url or index == 0:
        return
    base, _, number = url.rpartition("/")
    own = f"{base}/{(int(number or 0) + 8 * index) % 16}"
    os.environ["REDIS_URL"] = own
    settings.REDIS_URL = own
    if url == settings.CELERY_BROKER_URL:
        # Not os.environ's CELERY_BROKER_URL: Celery lets it override its app's broker_url.
        settings.CELERY_BROKER_URL = own
    cache = settings.CACHES["default"]
    if cache.get("LOCATION") == url:
        cache["LOCATION"] = own


_isolate_parallel_worker()

# The suite's peers (Prometheus, localstripe, kmock, HTTP peers, PostgreSQL, Redis,
# RabbitMQ) listen on loopback, which targets may not point at by default: allow
# it, here and in the workers and servers the tests start. The tests of the refusal
# empty the list.
TEST_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
os.environ["TARGET_ALLOWED_NETWORKS"] = ",".join(TEST_ALLOWED_NETWORKS)
settings.TARGET_ALLOWED_NETWORKS = list(TEST_ALLOWED_NETWORKS)

# Tasks sent by the code under test go to a queue of this test session only: on
# Redis when configured (a real worker started by a test consumes it), else to
# an in-memory broker. Nothing reaches a queue some other worker reads.
TEST_QUEUE = f"lotoops-test-{uuid.uuid4().hex[:8]}"


def _configure_celery() -> None:
    from lotoops.celery import app

    app.conf.broker_url = os.environ.get("REDIS_URL") or "memory://"
    app.conf.task_default_queue = TEST_QUEUE
    settings.CELERY_TASK_DEFAULT_QUEUE = TEST_QUEUE  # the queue names follow it
    app.conf.broker_transport_options = {"socket_timeout": 5, "socket_connect_timeout": 5}


_configure_celery()


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "")


def redis_available() -> bool:
    if not redis_url():
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(redis_url(), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (
        item.get_closest_marker("postgres")
        and "postgresql" not in settings.DATABASES["default"]["ENGINE"]
    ):
        _missing("this test needs PostgreSQL: set DATABASE_URL=postgres://…")
    if item.get_closest_marker("redis") and not redis_available():
        _missing("this test needs Redis: set REDIS_URL=redis://… to a running server")
    if item.get_closest_marker("cjk_font") and not Path(settings.PDF_CJK_FONT).is_file():
        _missing(
            f"this test needs the PDF exports' CJK font {settings.PDF_CJK_FONT}: "
            "apt-get install -y fonts-noto-cjk"
        )


@pytest.fixture(autouse=True)
def _fresh_alert_rules() -> None:
    """Each test reads the alert rules of its own database (a process keeps them 1 s)."""
    from alerts.routing import forget_rules

    forget_rules()


@pytest.fixture(autouse=True)
def _no_bad_token_count() -> None:
    """Each test starts with no bad bearer tokens counted against the loopback address
    (the count lives in the cache, Redis when configured, for BAD_TOKEN_WINDOW)."""
    from django.core.cache import cache

    from lotoops.middleware import bad_token_key

    for address in ("127.0.0.1", "::1"):
        cache.delete(bad_token_key(address))


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Django's default hasher takes ~0.5 s per user on purpose; tests need no such cost.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def runbook(db: None) -> None:
    from incidents.seed import seed_runbook

    seed_runbook()


@pytest.fixture
def responder(runbook: None) -> factories.User:
    user = factories.UserFactory(username="ana")
    user.groups.add(Group.objects.get(name="Responders"))
    return user


@pytest.fixture
def other_responder(runbook: None) -> factories.User:
    user = factories.UserFactory(username="ben")
    user.groups.add(Group.objects.get(name="Responders"))
    return user


@pytest.fixture
def viewer(runbook: None) -> factories.User:
    """Logged in, no group: may read open incidents, may not change them."""
    return factories.UserFactory(username="vic")


@pytest.fixture
def incident(responder: factories.User):
    return factories.declare(actor=responder)


@pytest.fixture
def responder_client(client, responder):
    client.force_login(responder)
    return client


class LiveServer:
    def __init__(self, url: str, server: object) -> None:
        self.url = url
        self.server = server


@pytest.fixture
def asgi_server(transactional_db: None, runbook: None) -> Iterator[LiveServer]:
    """The real ASGI app under uvicorn in a thread, on a free loopback port."""
    import uvicorn

    from lotoops.asgi import application

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        application, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", server)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    connection.close()
