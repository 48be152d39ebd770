"""HTTP health endpoints: the API's /health (init.health) and each banca's (banca.health).

The probe GETs the target's URL (or, when the target's options name a
`health_path`, that path joined to it) and judges what came back. An endpoint that
refuses, hangs or answers 5xx is a *finding*, not an error of the check: the
result is `failing` with a plain summary ("connection refused", "no answer within
5 s"). ProbeError is kept for our own misconfiguration (a URL we cannot use).

The bearer token, when the target names one, is sent and never shown: it is
scrubbed from everything the probe returns or emits, even if the endpoint echoes it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import NameResolutionError, ProtocolError, ReadTimeoutError

from .base import Emit, Outcome, Probe, ProbeError, ProbeResult, register
from .netguard import GuardedSession
from .redact import redact, redact_json

# What the responder sees of a body: pretty JSON up to this many lines, a text
# excerpt of this many characters; the whole JSON goes into the data when small.
MAX_JSON_LINES = 200
EXCERPT_CHARS = 500
JSON_DATA_CAP = 10_000
# We never read more than this of a body (a health endpoint answering megabytes is
# itself worth a look, but not worth the worker's memory).
MAX_BODY_BYTES = 1024 * 1024

HEALTHY = {"ok", "healthy", "up", "pass"}
# draft-inadvisable-health-check ("application/health+json") says warn = healthy with concerns.
WARN = {"warn", "warning"}
UNHEALTHY = {"down", "fail", "failing", "failed", "error", "degraded", "unhealthy", "critical"}
COMPONENT_KEYS = ("checks", "components", "services", "details", "dependencies")


@dataclass
class HealthParams:
    expect_json: bool = True
    slow_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.slow_seconds <= 0:
            raise ProbeError("parameter slow_seconds must be above 0")


@register
class HttpHealth(Probe):
    """GET the health endpoint and judge status code, body and speed."""

    name = "http.health"
    target_kind = "http"
    Params = HealthParams

    def run(self) -> ProbeResult:
        params: HealthParams = self.params
        url = self._url()
        token = self.target.secret()
        headers = {"Accept": "application/json", "User-Agent": "LotoOps health probe"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # requests' timeouts are per phase and per socket read: split the budget so
        # that connecting plus waiting for the answer stays within self.timeout.
        connect_timeout = max(0.05, min(5.0, self.timeout / 3))
        read_timeout = max(0.05, self.timeout - connect_timeout)
        deadline = time.monotonic() + self.timeout

        self.emit(f"GET {url}")
        started = time.monotonic()
        try:
            with (
                GuardedSession() as session,
                session.get(
                    url,
                    headers=headers,
                    timeout=(connect_timeout, read_timeout),
                    allow_redirects=False,
                    stream=True,
                ) as response,
            ):
                body, truncated = _read_body(response, deadline)
        except requests.exceptions.InvalidHeader:
            # Its message quotes the header, token included: never pass it on.
            raise ProbeError(
                f"the token of target {self.target.name} has characters a header cannot carry"
            ) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise ProbeError(_scrub(f"cannot request {url}: {exc}", token)) from None
        except requests.exceptions.RequestException as exc:
            elapsed = time.monotonic() - started
            summary = _scrub(_unreachable(exc, url, elapsed, connect_timeout), token)
            self.emit(summary)
            return ProbeResult(
                Outcome.FAILING,
                summary,
                data={"url": url, "error": summary, "elapsed_ms": round(elapsed * 1000)},
            )
        elapsed = time.monotonic() - started
        return _judge(response, body, truncated, elapsed, url, params, token, self.emit)

    def _url(self) -> str:
        url = self.target.url
        path = (self.target.options or {}).get("health_path")
        if path:
            url = urljoin(url if url.endswith("/") else url + "/", str(path).lstrip("/"))
        parts = urlsplit(url)
        if parts.password:
            raise ProbeError(
                f"target {self.target.name} has a password in its URL: "
                "name its environment variable instead"
            )
        if parts.scheme not in ("http", "https"):
            raise ProbeError(
                f"target {self.target.name} has URL {url!r}: give an http:// or https:// URL"
            )
        if not parts.hostname:
            raise ProbeError(f"target {self.target.name} has URL {url!r} without a host")
        return url


@register
class BancaHealth(HttpHealth):
    """The same check against a banca's endpoint (steps run per banca target)."""

    name = "http.banca_health"
    target_kind = "banca"


def _read_body(response: requests.Response, deadline: float) -> tuple[bytes, bool]:
    """Read at most MAX_BODY_BYTES, giving up when the budget is spent."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=16 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            return b"".join(chunks)[:MAX_BODY_BYTES], True
        if time.monotonic() > deadline:
            raise requests.exceptions.ReadTimeout(StalledBody())
    return b"".join(chunks), False


def _unreachable(
    exc: requests.exceptions.RequestException, url: str, elapsed: float, connect_timeout: float
) -> str:
    """The endpoint could not be asked or did not answer: say how, in words."""
    where = urlsplit(url).netloc
    causes = _causes(exc)
    innermost = _one_line(str(causes[-1]), 200)

    def has(*kinds: type[BaseException]) -> bool:
        return any(isinstance(c, kinds) for c in causes)

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection to {where} within {_seconds(connect_timeout)} s"
    if has(StalledBody):
        return f"{where} answered but its body was still arriving after {_seconds(elapsed)} s"
    if isinstance(exc, requests.exceptions.ReadTimeout) or has(ReadTimeoutError, TimeoutError):
        return f"no answer from {where} within {_seconds(elapsed)} s"
    if has(ConnectionRefusedError):
        return f"connection refused by {where} (nothing listening on that port)"
    if has(socket.gaierror, NameResolutionError):
        return f"host name {urlsplit(url).hostname} does not resolve (DNS): {innermost}"
    if has(ssl.SSLError) or isinstance(exc, requests.exceptions.SSLError):
        return f"TLS handshake with {where} failed: {innermost}"
    if has(ConnectionResetError, http.client.RemoteDisconnected, ProtocolError):
        return f"{where} closed the connection without a complete answer: {innermost}"
    return f"cannot get an answer from {where}: {innermost}"


class StalledBody(Exception):
    """The time budget ran out while the body was still arriving."""


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps, outermost first (requests nests
    urllib3's errors, which nest the socket's)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is f for f in found):
            continue
        found.append(current)
        for inner in (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ):
            if isinstance(inner, BaseException):
                todo.append(inner)
    return found


def _judge(
    response: requests.Response,
    body: bytes,
    truncated: bool,
    elapsed: float,
    url: str,
    params: HealthParams,
    token: str,
    emit: Emit,
) -> ProbeResult:
    status = response.status_code
    elapsed_ms = round(elapsed * 1000)
    head = f"HTTP {status} {response.reason or ''}".rstrip() + f" in {elapsed_ms:,} ms"
    emit(head)
    data: dict[str, Any] = {
        "url": url,
        "status_code": status,
        "elapsed_ms": elapsed_ms,
        "content_type": response.headers.get("Content-Type", ""),
    }
    text = _scrub(_decode(body, response), token)
    parsed: Any = None
    is_json = False
    if body and not truncated:
        try:
            parsed = json.loads(body)
            is_json = True
        except ValueError:
            pass
    if is_json:
        parsed = _scrub_json(parsed, token)
        _emit_json(parsed, emit)
        compact = json.dumps(parsed, ensure_ascii=False)
        if len(compact) <= JSON_DATA_CAP:
            data["json"] = parsed
        else:
            data["body_excerpt"] = compact[:EXCERPT_CHARS]
    else:
        data["body_excerpt"] = text[:EXCERPT_CHARS]
        _emit_text(text[:EXCERPT_CHARS], len(text) > EXCERPT_CHARS, emit)
    if truncated:
        data["body_truncated_at_bytes"] = MAX_BODY_BYTES

    if location := response.headers.get("Location"):
        data["location"] = _scrub(location, token)
    if not 200 <= status < 300:
        if 300 <= status < 400:
            detail = f"redirects to {data.get('location', '?')}: point the target at that URL"
        else:
            detail = _one_line(text) or "empty body"
        return ProbeResult(Outcome.FAILING, f"{head}: {detail}", data=data)

    problems: list[str] = []
    outcome = Outcome.OK
    if params.expect_json and not is_json:
        outcome = Outcome.WARNING
        if truncated:
            problems.append(f"body over {MAX_BODY_BYTES // 1024} KiB, not read as JSON")
        else:
            problems.append("body is not JSON" if body else "empty body, JSON expected")
    if is_json and isinstance(parsed, dict):
        verdict, reason = _status_verdict(parsed)
        if verdict != Outcome.OK:
            outcome = _worse(outcome, verdict)
            problems.append(reason)
    if elapsed > params.slow_seconds:
        outcome = _worse(outcome, Outcome.WARNING)
        problems.append(f"slow: over {_seconds(params.slow_seconds)} s")
    summary = head if not problems else f"{head}; " + "; ".join(problems)
    return ProbeResult(outcome, summary, data=data)


def _status_verdict(doc: dict[str, Any]) -> tuple[str, str]:
    """Read the health document's own "status" and those of its components."""
    verdict, reasons = Outcome.OK, []
    if "status" in doc:
        word = str(doc["status"]).strip().lower()
        if word in WARN:
            verdict = Outcome.WARNING
            reasons.append(f'status "{doc["status"]}"')
        elif word not in HEALTHY:
            verdict = Outcome.FAILING
            reasons.append(f'status "{doc["status"]}"')
    bad = []
    for key in COMPONENT_KEYS:
        parts = doc.get(key)
        if not isinstance(parts, dict):
            continue
        for part, value in parts.items():
            if isinstance(value, dict) and isinstance(value.get("status"), str):
                state = value["status"]
                unhealthy = state.strip().lower() not in HEALTHY
            elif isinstance(value, str):  # {"db": "down"}, but not {"version": "1.4.2"}
                state = value
                unhealthy = state.strip().lower() in UNHEALTHY | WARN
            else:
                continue
            if unhealthy:
                bad.append(f"{part} {state}")
    if bad:
        verdict = _worse(verdict, Outcome.WARNING)
        reasons.append(", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return verdict, "; ".join(reasons)


def _worse(a: str, b: str) -> str:
    order = [Outcome.OK, Outcome.WARNING, Outcome.FAILING, Outcome.ERROR]
    return max(a, b, key=order.index)


def _emit_json(doc: Any, emit: Emit) -> None:
    lines = json.dumps(doc, indent=2, ensure_ascii=False).splitlines()
    for line in lines[:MAX_JSON_LINES]:
        emit(line)
    if len(lines) > MAX_JSON_LINES:
        emit(f"… {len(lines) - MAX_JSON_LINES} more lines not shown")


def _emit_text(text: str, cut: bool, emit: Emit) -> None:
    for line in text.splitlines():
        emit(line)
    if cut:
        emit(f"… (first {EXCERPT_CHARS} characters shown)")


def _decode(body: bytes, response: requests.Response) -> str:
    # requests assumes ISO-8859-1 for text/* without a charset; UTF-8 is the better bet.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return body.decode(response.encoding or "latin-1", errors="replace")
    except LookupError:
        return body.decode("latin-1")


def _one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _seconds(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def _scrub(text: str, secret: str) -> str:
    return redact(text, [secret])


def _scrub_json(value: Any, secret: str) -> Any:
    return redact_json(value, [secret])
