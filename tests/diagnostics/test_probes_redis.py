"""redis.ping against the real Redis on 127.0.0.1:6379 and a throwaway password-protected one."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from diagnostics.models import Target
from diagnostics.probes.base import (
    Outcome,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    get_probe,
)
from tests.conftest import _missing

SHARED_URL = "redis://127.0.0.1:6379/0"
SECRET_ENV = "LOTOOPS_TARGET_TEST_REDIS_PASSWORD"
PASSWORD = "pw-8d41c7-throwaway"


@pytest.fixture(scope="module")
def shared_redis() -> str:
    try:
        redis.Redis.from_url(SHARED_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        _missing(f"these tests need Redis on 127.0.0.1:6379 ({exc})")
    return SHARED_URL


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope="module")
def protected_redis() -> Iterator[str]:
    """A throwaway redis-server that requires PASSWORD, gone after the module."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("these tests need the redis-server binary")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD]
    args += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(
        [binary, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=1, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the throwaway redis-server did not start")
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel's backlog does) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def target(url: str, *, secret_env: str = "") -> Target:
    return Target(name="lotolink-redis", kind="redis", url=url, secret_env=secret_env)


def run(t: Target, params: dict | None = None, *, timeout: float = 3) -> tuple[ProbeResult, list]:
    lines: list[str] = []
    result = get_probe("redis.ping").build(t, params, timeout=timeout, emit=lines.append).run()
    return result, lines


def assert_hidden(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


def test_ping_reports_latency_and_the_info_a_responder_needs(shared_redis) -> None:
    result, lines = run(target(shared_redis), {"max_blocked_clients": 10_000})

    assert result.outcome == Outcome.OK
    assert result.summary.startswith("PONG in ")
    data = result.data
    for key in (
        "latency_ms",
        "used_memory_human",
        "maxmemory",
        "connected_clients",
        "blocked_clients",
        "redis_version",
        "uptime_in_seconds",
    ):
        assert key in data, key
    assert 0 <= data["latency_ms"] < 1000
    assert data["connected_clients"] >= 1
    assert f"Redis {data['redis_version']}" in result.summary
    assert lines[:2] == ["PING 127.0.0.1:6379", lines[1]]
    assert lines[1].startswith("PONG in ")
    assert f"redis_version: {data['redis_version']}" in lines
    json.dumps(dataclasses.asdict(result))


def test_a_client_blocked_in_blpop_makes_a_warning(shared_redis) -> None:
    key = f"lotoops-test-{uuid.uuid4().hex}"
    waiter = redis.Redis.from_url(shared_redis, socket_timeout=5)
    admin = redis.Redis.from_url(shared_redis, socket_timeout=2)
    thread = threading.Thread(target=waiter.blpop, args=([key],), kwargs={"timeout": 3})
    thread.start()
    try:
        deadline = time.monotonic() + 2
        while admin.info("clients")["blocked_clients"] < 1:
            assert time.monotonic() < deadline, "the BLPOP client never blocked"
            time.sleep(0.01)

        result, _ = run(target(shared_redis))

        assert result.outcome == Outcome.WARNING
        assert result.data["blocked_clients"] >= 1
        assert "blocked client" in result.summary.split("; ")[-1]
    finally:
        admin.rpush(key, "wake up")
        thread.join(timeout=5)
        admin.delete(key)
        waiter.close()
        admin.close()


def test_the_right_password_is_accepted_and_memory_near_maxmemory_warns(
    protected_redis, monkeypatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, PASSWORD)
    admin = redis.Redis.from_url(protected_redis, password=PASSWORD)
    used = admin.info("memory")["used_memory"]
    admin.config_set("maxmemory", int(used / 0.95))
    admin.close()

    result, lines = run(target(protected_redis, secret_env=SECRET_ENV))

    assert result.outcome == Outcome.WARNING
    assert result.data["memory_ratio"] > 0.9
    assert result.summary.endswith("% of maxmemory")
    assert " used of " in result.summary
    assert_hidden(PASSWORD, json.dumps(dataclasses.asdict(result)), "\n".join(lines))


def test_a_wrong_password_is_a_clear_permanent_error(protected_redis, monkeypatch) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, wrong)

    with pytest.raises(ProbeError) as exc:
        run(target(protected_redis, secret_env=SECRET_ENV))

    assert not isinstance(exc.value, TransientProbeError)
    assert f"refused the password from ${SECRET_ENV}" in str(exc.value)
    assert_hidden(wrong, str(exc.value))


def test_no_password_for_a_server_that_needs_one_says_so(protected_redis, monkeypatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)

    with pytest.raises(ProbeError) as exc:
        run(target(protected_redis, secret_env=SECRET_ENV))

    assert not isinstance(exc.value, TransientProbeError)
    assert str(exc.value).endswith(f"requires a password and ${SECRET_ENV} is empty or unset")


def test_a_password_sent_to_a_server_without_one_is_a_permanent_error(
    shared_redis, monkeypatch
) -> None:
    secret = f"unexpected-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, secret)

    with pytest.raises(ProbeError) as exc:
        run(target(shared_redis, secret_env=SECRET_ENV))

    assert not isinstance(exc.value, TransientProbeError)
    assert "127.0.0.1:6379 has no password, yet the target sends one" in str(exc.value)
    assert_hidden(secret, str(exc.value))


def test_a_refused_connection_is_permanent(monkeypatch) -> None:
    with pytest.raises(ProbeError) as exc:
        run(target("redis://127.0.0.1:1/0"))

    assert not isinstance(exc.value, TransientProbeError)
    assert "connection refused by 127.0.0.1:1" in str(exc.value)


def test_a_server_that_does_not_answer_is_transient(silent_port) -> None:
    started = time.monotonic()
    with pytest.raises(TransientProbeError, match="no answer from"):
        run(target(f"redis://127.0.0.1:{silent_port}/0"), timeout=0.6)

    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/", "redis://:pw@127.0.0.1:6379/0", "redis:///0"]
)
def test_a_url_we_cannot_use_is_a_permanent_error(url) -> None:
    with pytest.raises(ProbeError) as exc:
        run(target(url))

    assert not isinstance(exc.value, TransientProbeError)
    assert "pw" not in str(exc.value)
