"""Redis gone (LotoOps's own cache and broker): every page is still served, "Run"
says clearly that the queue is unreachable and keeps the run, and the run is sent
once Redis is back. Against a real redis-server this test starts on its own port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from django.core.cache import caches
from kombu import pools

from diagnostics import queues, services
from diagnostics.models import CheckRun, RunStatus
from incidents import live
from lotoops.celery import app
from tests.conftest import IN_CI
from tests.diagnostics.conftest import step


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int, tmp: str) -> None:
        self.port, self.tmp = port, tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def reconnect(broker_url: str) -> None:
    """Point this process's Celery producer (and the live-stream publisher) at `broker_url`."""
    app.conf.broker_url = broker_url
    pools.reset()  # kombu's process-wide producer pools, keyed by connection
    app._pool = None
    app.amqp._producer_pool = None
    live.redis_client.cache_clear()


@pytest.fixture
def own_redis(tmp_path, settings) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is needed")
        pytest.skip("redis-server is needed")
    server = RedisServer(free_port(), str(tmp_path))
    server.start()
    settings.REDIS_URL = server.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }
    before = app.conf.broker_url
    reconnect(server.url)
    yield server
    server.stop()
    reconnect(before)
    caches["default"].close()


def test_pages_answer_and_run_says_the_queue_is_unreachable(
    transactional_db, own_redis, responder_client, incident, testbook, api_target, settings
):
    settings.CHECK_RUN_REQUEUE_AFTER = 300
    assert responder_client.get(incident.get_absolute_url()).status_code == 200  # fills the cache
    own_redis.stop()
    for url in ("/", incident.get_absolute_url(), f"/incidents/{incident.pk}/told/"):
        assert responder_client.get(url).status_code == 200, url
    started = time.monotonic()
    answer = responder_client.post(
        f"/incidents/{incident.pk}/steps/test.diag/run/", headers={"HX-Request": "true"}
    )
    assert time.monotonic() - started < 5  # the broker being down does not hold the page
    assert answer.status_code == 200
    assert "The task queue is unreachable" in answer.content.decode()
    run = CheckRun.objects.get(incident=incident, step=step("diag"))
    assert run.status == RunStatus.QUEUED
    # Redis back: the reaper's next pass sends the run (it was dated back for it).
    own_redis.start()
    services.reap_stale_runs()
    checks = queues.name(queues.CHECKS)
    assert redis.Redis.from_url(own_redis.url).llen(checks) == 1
