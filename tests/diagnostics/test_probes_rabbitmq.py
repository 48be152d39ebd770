"""rabbitmq.queues against the real RabbitMQ on 127.0.0.1:5672 (guest/guest, vhost "/")."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import amqp
import pytest

from diagnostics.models import Target
from diagnostics.probes.base import (
    Outcome,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    get_probe,
)
from diagnostics.probes.rabbitmq import parse_broker
from tests.conftest import _missing

HOST = "127.0.0.1:5672"
URL = "amqp://guest@127.0.0.1:5672/"
SECRET_ENV = "LOTOOPS_TARGET_TEST_AMQP_PASSWORD"
DEPTH = 25


def connect() -> amqp.Connection:
    conn = amqp.Connection(
        host=HOST,
        userid="guest",
        password="guest",
        connect_timeout=2,
        read_timeout=2,
        write_timeout=2,
    )
    conn.connect()
    return conn


@pytest.fixture(scope="module")
def broker() -> Iterator[amqp.Connection]:
    try:
        conn = connect()
    except (OSError, amqp.exceptions.AMQPError) as exc:
        _missing(f"these tests need RabbitMQ on {HOST} with guest/guest ({exc!r})")
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def queues(broker: amqp.Connection) -> Iterator[SimpleNamespace]:
    """Three fresh queues: `full` holds DEPTH messages and no consumer, `empty` holds
    nothing, `consumed` has one consumer (on its own connection, never acking)."""
    prefix = f"lotoops-test-{uuid.uuid4().hex[:12]}"
    names = SimpleNamespace(
        full=f"{prefix}-full",
        empty=f"{prefix}-empty",
        consumed=f"{prefix}-consumed",
        missing=f"{prefix}-missing",
    )
    channel = broker.channel()
    consumer_conn = None
    try:
        for name in (names.full, names.empty, names.consumed):
            channel.queue_declare(name, durable=False, auto_delete=False)
        channel.confirm_select()  # each publish waits for the broker's ack
        for i in range(DEPTH):
            channel.basic_publish(amqp.Message(f"play {i}"), exchange="", routing_key=names.full)
        consumer_conn = connect()
        consumer_conn.channel().basic_consume(names.consumed, no_ack=False, callback=lambda m: None)
        yield names
    finally:
        if consumer_conn is not None:
            consumer_conn.close()
        for name in (names.full, names.empty, names.consumed):
            channel.queue_delete(name)
        channel.close()


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, "guest")
    return "guest"


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


def target(url: str = URL) -> Target:
    return Target(name="lotolink-rabbitmq", kind="rabbitmq", url=url, secret_env=SECRET_ENV)


def run(t: Target, params: dict, *, timeout: float = 5) -> tuple[ProbeResult, list[str]]:
    lines: list[str] = []
    result = get_probe("rabbitmq.queues").build(t, params, timeout=timeout, emit=lines.append).run()
    json.dumps(dataclasses.asdict(result))
    return result, lines


def test_it_reads_depths_and_consumers_and_notes_a_missing_queue(queues, password) -> None:
    order = [queues.full, queues.missing, queues.empty, queues.consumed]

    result, lines = run(target(), {"queues": order})

    rows = {row["name"]: row for row in result.data["queues"]}
    assert [row["name"] for row in result.data["queues"]] == order
    assert rows[queues.full] == {
        "name": queues.full,
        "state": "ok",
        "messages": DEPTH,
        "consumers": 0,
    }
    assert rows[queues.missing]["state"] == "missing"
    # Read after the 404 closed the channel: the probe carried on with a live one.
    assert rows[queues.empty] == {
        "name": queues.empty,
        "state": "ok",
        "messages": 0,
        "consumers": 0,
    }
    assert rows[queues.consumed]["messages"] == 0
    assert rows[queues.consumed]["consumers"] == 1
    assert result.data["total_messages"] == DEPTH
    assert result.outcome == Outcome.WARNING
    assert result.summary == (
        f"4 queues, 25 messages; {queues.full} has no consumer; {queues.missing} is missing"
    )
    assert lines[0] == "connecting to 127.0.0.1:5672 as guest"
    table = lines[1:]
    assert table[0].split() == ["queue", "messages", "consumers"]
    assert table[1].split() == [queues.full, "25", "0", "<-", "no", "consumer"]
    assert table[2].split() == [queues.missing, "missing"]
    assert table[4].split() == [queues.consumed, "0", "1"]


def test_queues_with_consumers_and_below_the_threshold_are_ok(queues, password) -> None:
    result, _ = run(target(), {"queues": [queues.empty, queues.consumed]})

    assert result.outcome == Outcome.OK
    assert result.summary == "2 queues, 0 messages"


def test_a_queue_at_the_warning_depth_warns(queues, password) -> None:
    result, _ = run(target(), {"queues": [queues.full], "warning_depth": DEPTH})

    assert result.outcome == Outcome.WARNING
    assert result.summary == (
        f"1 queue, 25 messages; {queues.full} holds 25 messages; {queues.full} has no consumer"
    )


def test_a_wrong_password_is_access_refused_and_permanent(broker, monkeypatch) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, wrong)

    with pytest.raises(ProbeError) as exc:
        run(target(), {"queues": ["plays.pending"]})

    assert not isinstance(exc.value, TransientProbeError)
    assert "ACCESS_REFUSED" in str(exc.value)
    assert f"${SECRET_ENV}" in str(exc.value)
    assert wrong not in str(exc.value)


def test_an_unknown_vhost_is_permanent(broker, password) -> None:
    with pytest.raises(ProbeError, match="refused vhost 'no-such-vhost'") as exc:
        run(target("amqp://guest@127.0.0.1:5672/no-such-vhost"), {"queues": ["q"]})

    assert not isinstance(exc.value, TransientProbeError)


def test_a_refused_connection_is_permanent(password) -> None:
    with pytest.raises(ProbeError) as exc:
        run(target("amqp://guest@127.0.0.1:1/"), {"queues": ["plays.pending"]})

    assert not isinstance(exc.value, TransientProbeError)
    assert "connection refused by 127.0.0.1:1" in str(exc.value)


def test_a_broker_that_does_not_answer_is_transient(silent_port, password) -> None:
    started = time.monotonic()
    with pytest.raises(TransientProbeError, match="no answer from RabbitMQ"):
        run(target(f"amqp://guest@127.0.0.1:{silent_port}/"), {"queues": ["q"]}, timeout=0.5)

    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("url", "vhost", "user", "port"),
    [
        ("amqp://guest@127.0.0.1:5672/", "/", "guest", 5672),
        ("amqp://lotolink@rabbit", "/", "lotolink", 5672),
        ("amqp://lotolink@rabbit:5673/%2F", "/", "lotolink", 5673),
        ("amqp://lotolink@rabbit/lotolink", "lotolink", "lotolink", 5672),
        ("amqps://ops%40lotolink@rabbit/prod%2Feu", "prod/eu", "ops@lotolink", 5671),
    ],
)
def test_the_url_gives_host_port_vhost_and_user(url, vhost, user, port) -> None:
    broker = parse_broker(target(url))

    assert (broker.vhost, broker.user, broker.port) == (vhost, user, port)


@pytest.mark.parametrize(
    "params", [{"queues": []}, {"queues": ["a", ""]}, {"queues": ["a"], "warning_depth": 0}, {}]
)
def test_bad_params_are_refused_when_the_probe_is_built(params) -> None:
    with pytest.raises(ProbeError):
        get_probe("rabbitmq.queues").build(target(), params, timeout=1)


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ProbeError, match="password in its URL") as exc:
        run(target("amqp://guest:hunter2@127.0.0.1:5672/"), {"queues": ["q"]})

    assert "hunter2" not in str(exc.value)
