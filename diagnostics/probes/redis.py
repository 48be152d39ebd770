"""Redis connectivity (api.redis_ping): PING latency and the INFO a responder looks at.

The password comes from the target's secret. We speak RESP2 on purpose: redis-py
8 defaults to `HELLO 3 AUTH default <password>`, which a server without a password
accepts whatever the password is, so a target pointing at the wrong (open) server
would look fine. The classic `AUTH <password>` is refused by such a server, and we
report that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from incidents.rules.text import format_duration

from .base import (
    Emit,
    Outcome,
    Probe,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    register,
)
from .redact import redact

INFO_FIELDS = (
    "redis_version",
    "role",
    "uptime_in_seconds",
    "connected_clients",
    "blocked_clients",
    "used_memory",
    "used_memory_human",
    "maxmemory",
    "maxmemory_human",
    "maxmemory_policy",
    "evicted_keys",
    "rejected_connections",
)


@dataclass
class PingParams:
    # Warn when used memory passes this share of maxmemory (when maxmemory is set).
    memory_warning_ratio: float = 0.9
    # Warn when more clients than this wait in a blocking command (BLPOP, …). A Redis
    # used as a Celery broker always has some: raise this for such a target.
    max_blocked_clients: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.memory_warning_ratio <= 1:
            raise ProbeError("parameter memory_warning_ratio must be above 0 and at most 1")
        if self.max_blocked_clients < 0:
            raise ProbeError("parameter max_blocked_clients must be 0 or more")


@register
class RedisPing(Probe):
    """PING, then INFO: latency, memory against maxmemory, clients."""

    name = "redis.ping"
    target_kind = "redis"
    Params = PingParams

    def run(self) -> ProbeResult:
        params: PingParams = self.params
        where = self._where()
        secret = self.target.secret()
        # Each socket operation gets a third of the budget: connect (with AUTH),
        # PING and INFO together stay within self.timeout.
        step_timeout = max(0.05, self.timeout / 3)
        try:
            client = redis.Redis.from_url(
                self.target.url,
                password=secret or None,
                protocol=2,
                socket_timeout=step_timeout,
                socket_connect_timeout=step_timeout,
                retry=Retry(NoBackoff(), 0),  # one attempt: the task decides on retries
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ProbeError(
                f"target {self.target.name} has a URL redis-py refuses: {exc}"
            ) from None
        try:
            self.emit(f"PING {where}")
            started = time.monotonic()
            client.ping()
            latency_ms = (time.monotonic() - started) * 1000
            self.emit(f"PONG in {latency_ms:.1f} ms")
            try:
                info = client.info()
            except redis.exceptions.ResponseError as exc:
                # Managed services may rename or forbid INFO; PING alone still answers.
                reason = _scrub(str(exc), secret)
                self.emit(f"INFO refused: {reason}")
                return ProbeResult(
                    Outcome.OK,
                    f"PONG in {latency_ms:.1f} ms (INFO not available: {reason})",
                    data={"latency_ms": round(latency_ms, 2)},
                )
        except redis.exceptions.RedisError as exc:
            raise _probe_error(exc, where, getattr(self.target, "secret_env", ""), secret) from None
        finally:
            client.close()
        return _judge(info, latency_ms, params, self.emit)

    def _where(self) -> str:
        parts = urlsplit(self.target.url)
        if parts.password:
            raise ProbeError(
                f"target {self.target.name} has a password in its URL: "
                "name its environment variable instead"
            )
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ProbeError(
                f"target {self.target.name} has URL {self.target.url!r}: "
                "give a redis://, rediss:// or unix:// URL"
            )
        if parts.scheme == "unix":
            return parts.path
        try:
            port = parts.port or 6379
        except ValueError:
            raise ProbeError(f"target {self.target.name} has a malformed port") from None
        if not parts.hostname:
            raise ProbeError(
                f"target {self.target.name} has URL {self.target.url!r} without a host"
            )
        return f"{parts.hostname}:{port}"


def _probe_error(exc: redis.exceptions.RedisError, where: str, env: str, secret: str) -> Exception:
    """Map redis-py's exception to ours, with a sentence a responder can act on."""
    text = _scrub(str(exc), secret)
    lowered = text.lower()
    if isinstance(exc, redis.exceptions.AuthenticationError) or "noauth" in lowered:
        source = f"${env}" if env else "the target's secret"
        if "without any password configured" in lowered or "no password is set" in lowered:
            return ProbeError(
                f"{where} has no password, yet the target sends one (from {source}): "
                "is this the right server? It accepts anyone."
            )
        if "noauth" in lowered or "authentication required" in lowered:
            missing = f"${env} is empty or unset" if env else "the target names no secret_env"
            return ProbeError(f"{where} requires a password and {missing}")
        return ProbeError(f"{where} refused the password from {source}: {text}")
    if isinstance(exc, redis.exceptions.TimeoutError):
        return TransientProbeError(f"no answer from {where} in time: {text}")
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return TransientProbeError(f"{where} is loading its dataset into memory; try again")
    if isinstance(exc, redis.exceptions.ConnectionError):
        if "connection refused" in lowered or "error 111 " in lowered:
            return ProbeError(f"connection refused by {where}: is Redis running on that port?")
        if "name or service not known" in lowered or "error -2 " in lowered:
            return ProbeError(f"host of {where} does not resolve (DNS): check the target's URL")
        if "max number of clients" in lowered:
            return TransientProbeError(f"{where} refused us: max number of clients reached")
        return TransientProbeError(f"connection to {where} failed: {text}")
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return ProbeError(f"{where} does not speak the Redis protocol: {text}")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return ProbeError(f"{where}: the configured user may not run PING: {text}")
    return ProbeError(f"{where} answered with an error: {text}")


def _judge(info: dict[str, Any], latency_ms: float, params: PingParams, emit: Emit) -> ProbeResult:
    fields = {k: info[k] for k in INFO_FIELDS if k in info}
    for key, value in fields.items():
        emit(f"{key}: {value}")
    used = int(info.get("used_memory") or 0)
    maximum = int(info.get("maxmemory") or 0)
    blocked = int(info.get("blocked_clients") or 0)
    clients = info.get("connected_clients", "?")
    version = info.get("redis_version", "?")

    memory = f"{info.get('used_memory_human', used)} used"
    problems: list[str] = []
    if maximum:
        ratio = used / maximum
        memory += f" of {info.get('maxmemory_human', maximum)} ({ratio:.0%})"
        if ratio > params.memory_warning_ratio:
            problems.append(f"memory at {ratio:.0%} of maxmemory")
    else:
        memory += " (no maxmemory)"
    if blocked > params.max_blocked_clients:
        problems.append(f"{blocked} blocked client{'s' if blocked != 1 else ''}")

    summary = (
        f"PONG in {latency_ms:.1f} ms; Redis {version}, {memory}, "
        f"{clients} client{'s' if clients != 1 else ''} connected, {blocked} blocked, "
        f"up {_duration(info.get('uptime_in_seconds'))}"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    data = {"latency_ms": round(latency_ms, 2), **fields}
    if maximum:
        data["memory_ratio"] = round(used / maximum, 4)
    return ProbeResult(Outcome.WARNING if problems else Outcome.OK, summary, data=data)


def _duration(seconds: Any) -> str:
    try:
        left = int(seconds)
    except (TypeError, ValueError):
        return "?"
    return format_duration(left)


def _scrub(text: str, secret: str) -> str:
    return redact(text, [secret])
