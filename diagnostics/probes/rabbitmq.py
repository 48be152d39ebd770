"""RabbitMQ queue depths (init.queue_depth, pay.queues) over AMQP with py-amqp.

A passive `queue.declare` reads a queue's ready-message and consumer counts without
creating it and needs no management plugin. A queue that does not exist makes the
broker close the channel (404): we note it as missing and carry on with a fresh
channel. Login and vhost refusals are permanent; timeouts and dropped connections
may pass and are transient.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp
from amqp import exceptions as amqp_errors

from .base import (
    Emit,
    Outcome,
    Probe,
    ProbeError,
    ProbeResult,
    TargetLike,
    TransientProbeError,
    register,
)
from .redact import redact


@dataclass
class QueuesParams:
    queues: list[str]
    warning_depth: int = 1000

    def __post_init__(self) -> None:
        if not self.queues:
            raise ProbeError("parameter queues must name at least one queue")
        if any(not q for q in self.queues):
            raise ProbeError("parameter queues must not hold an empty name")
        if self.warning_depth < 1:
            raise ProbeError("parameter warning_depth must be 1 or more")


@dataclass
class Broker:
    host: str
    port: int
    vhost: str
    user: str
    ssl: bool

    @property
    def where(self) -> str:
        vhost = "" if self.vhost == "/" else f" vhost {self.vhost}"
        return f"{self.host}:{self.port}{vhost}"


def parse_broker(target: TargetLike) -> Broker:
    """host, port, vhost and user from an `amqp://user@host:5672/vhost` URL."""
    parts = urlsplit(target.url)
    if parts.password:
        raise ProbeError(
            f"target {target.name} has a password in its URL: name its environment variable instead"
        )
    if parts.scheme not in ("amqp", "amqps"):
        raise ProbeError(f"target {target.name} has URL {target.url!r}: give an amqp:// URL")
    if not parts.hostname:
        raise ProbeError(f"target {target.name} has no host in its URL")
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError:
        raise ProbeError(f"target {target.name} has a malformed port") from None
    # The AMQP URI spec: an empty path is the default vhost "/"; otherwise the path
    # minus its leading slash, percent-decoded ("/%2F" is "/" too).
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = unquote(path) or "/"
    return Broker(
        host=parts.hostname,
        port=port,
        vhost=vhost,
        user=unquote(parts.username or "guest"),
        ssl=parts.scheme == "amqps",
    )


@register
class RabbitQueues(Probe):
    """Depth and consumers of each named queue."""

    name = "rabbitmq.queues"
    target_kind = "rabbitmq"
    Params = QueuesParams

    def run(self) -> ProbeResult:
        params: QueuesParams = self.params
        broker = parse_broker(self.target)
        secret = self.target.secret()
        env = getattr(self.target, "secret_env", "")
        deadline = time.monotonic() + self.timeout
        host = f"[{broker.host}]" if ":" in broker.host else broker.host
        connection = amqp.Connection(
            host=f"{host}:{broker.port}",
            userid=broker.user,
            password=secret,
            virtual_host=broker.vhost,
            ssl=broker.ssl,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            heartbeat=0,
            client_properties={"connection_name": "lotoops rabbitmq.queues probe"},
        )
        self.emit(f"connecting to {broker.where} as {broker.user}")
        try:
            try:
                connection.connect()
            except (amqp_errors.AccessRefused, amqp_errors.NotAllowed) as exc:
                raise _login_refused(exc, broker, env) from None
            channel = connection.channel()
            rows: list[dict[str, Any]] = []
            for queue in params.queues:
                if time.monotonic() > deadline:
                    raise TransientProbeError(
                        f"time limit of {self.timeout:g} s reached after {len(rows)} of "
                        f"{len(params.queues)} queues"
                    )
                row, channel = _inspect(connection, channel, queue)
                rows.append(row)
        except ProbeError:
            raise
        except (amqp_errors.AMQPError, OSError) as exc:
            raise _connection_error(exc, broker, secret) from None
        finally:
            _close(connection)
        return _judge(rows, params, broker, self.emit)


def _inspect(
    connection: amqp.Connection, channel: amqp.Channel, queue: str
) -> tuple[dict[str, Any], amqp.Channel]:
    """One passive declare; a refusal closes the channel, so hand back a live one."""
    try:
        ok = channel.queue_declare(queue=queue, passive=True)
    except amqp_errors.NotFound:
        row = {"name": queue, "state": "missing", "messages": None, "consumers": None}
    except amqp_errors.ChannelError as exc:  # e.g. 403: no access to this queue
        row = {
            "name": queue,
            "state": "error",
            "error": str(getattr(exc, "reply_text", exc)),
            "messages": None,
            "consumers": None,
        }
    else:
        return {
            "name": queue,
            "state": "ok",
            "messages": ok.message_count,
            "consumers": ok.consumer_count,
        }, channel
    # The broker closed that channel. py-amqp may already have reopened it; if not,
    # take a new one on the same connection.
    if not channel.is_open:
        channel = connection.channel()
    return row, channel


def _judge(
    rows: list[dict[str, Any]], params: QueuesParams, broker: Broker, emit: Emit
) -> ProbeResult:
    width = max(len("queue"), *(len(r["name"]) for r in rows))
    emit(f"{'queue':<{width}}  {'messages':>10}  {'consumers':>9}")
    notes: list[str] = []
    total = 0
    for row in rows:
        name = row["name"]
        if row["state"] == "missing":
            emit(f"{name:<{width}}  {'missing':>10}")
            notes.append(f"{name} is missing")
            continue
        if row["state"] == "error":
            emit(f"{name:<{width}}  {'error':>10}  {row['error']}")
            notes.append(f"{name}: {row['error']}")
            continue
        messages, consumers = row["messages"], row["consumers"]
        total += messages
        flags = []
        if messages >= params.warning_depth:
            flags.append(f"at or over {params.warning_depth:,}")
            notes.append(f"{name} holds {messages:,} messages")
        if consumers == 0 and messages > 0:
            flags.append("no consumer")
            notes.append(f"{name} has no consumer")
        flag = f"  <- {', '.join(flags)}" if flags else ""
        emit(f"{name:<{width}}  {messages:>10,}  {consumers:>9}{flag}")

    count = len(rows)
    summary = (
        f"{count} queue{'s' if count != 1 else ''}, {total:,} message{'s' if total != 1 else ''}"
    )
    if notes:
        summary += "; " + "; ".join(notes)
    return ProbeResult(
        Outcome.WARNING if notes else Outcome.OK,
        summary,
        data={
            "broker": broker.where,
            "vhost": broker.vhost,
            "total_messages": total,
            "warning_depth": params.warning_depth,
            "queues": rows,
        },
    )


def _login_refused(exc: amqp_errors.AMQPError, broker: Broker, env: str) -> ProbeError:
    source = f"${env}" if env else "the target's secret (no secret_env named)"
    text = str(getattr(exc, "reply_text", "") or exc)
    if isinstance(exc, amqp_errors.NotAllowed):
        return ProbeError(f"RabbitMQ at {broker.where} refused vhost {broker.vhost!r}: {text}")
    return ProbeError(
        f"RabbitMQ at {broker.host}:{broker.port} refused the login of {broker.user!r} "
        f"(ACCESS_REFUSED): check the password in {source}"
    )


def _connection_error(exc: BaseException, broker: Broker, secret: str) -> ProbeError:
    where = f"{broker.host}:{broker.port}"
    text = str(exc)
    text = redact(text, [secret])
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(f"connection refused by {where}: is RabbitMQ running on that port?")
    if isinstance(exc, socket.gaierror):
        return ProbeError(f"host {broker.host} does not resolve (DNS): check the target's URL")
    if isinstance(exc, TimeoutError):
        return TransientProbeError(f"no answer from RabbitMQ at {where} in time")
    if isinstance(exc, amqp_errors.RecoverableConnectionError | OSError):
        # Broker shutting down (320), resource alarms, a reset connection: may pass.
        return TransientProbeError(f"connection to RabbitMQ at {where} lost: {text}")
    return ProbeError(f"RabbitMQ at {where} answered with an error: {text}")


def _close(connection: amqp.Connection) -> None:
    # Closing a connection that failed half-way may itself fail: nothing to report.
    with contextlib.suppress(Exception):
        connection.close()
    with contextlib.suppress(Exception):
        connection.collect()
