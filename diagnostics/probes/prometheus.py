"""Prometheus: one instant query (error rate, latency, any PromQL) and the scrape targets.

Both talk to the HTTP API (`/api/v1/query`, `/api/v1/targets`) with `requests`, an
optional bearer token from the target's secret, and `self.timeout` as the budget for
the whole call: connect, Prometheus's own evaluation (its `timeout` parameter) and
reading the body.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3

from incidents.rules.text import format_duration

from .base import Outcome, Probe, ProbeError, ProbeResult, TransientProbeError, register
from .netguard import GuardedSession
from .redact import redact

CONNECT_TIMEOUT = 5.0  # seconds, at most; a reachable Prometheus connects in milliseconds
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100  # series shown and stored; thresholds still see every series
MAX_DOWN_IN_SUMMARY = 3
# Statuses a proxy or a restarting Prometheus returns and that may pass on retry.
TRANSIENT_STATUSES = {429, 502, 503, 504}
# Prometheus errorType values that may pass on retry (query timeout, shutting down).
TRANSIENT_ERROR_TYPES = {"timeout", "canceled", "unavailable"}


class PrometheusProbe(Probe):
    """The HTTP plumbing shared by the Prometheus probes."""

    target_kind = "prometheus"

    def _get(
        self, path: str, params: dict[str, str] | None = None, *, server_timeout: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        """GET an API path: its `data` and Prometheus's warnings, or the right ProbeError.

        The whole call fits in `self.timeout`: connecting gets at most a third of it,
        the headers the rest, and every read of the body what is left of the budget.
        With `server_timeout`, Prometheus is asked to give up evaluating a little
        before that, so its own (transient) timeout error arrives instead of a cut.
        """
        deadline = time.monotonic() + self.timeout
        connect = min(CONNECT_TIMEOUT, self.timeout / 3)
        read = self.timeout - connect
        params = dict(params or {})
        if server_timeout:
            params["timeout"] = f"{max(read - 0.5, read * 0.8):.3f}"
        url = self.target.url.rstrip("/") + path
        headers = {"Accept": "application/json"}
        token = self.target.secret()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        slow = f"Prometheus at {self.target.url} did not answer within {self.timeout:g} s"
        try:
            # Never a redirect (the token would follow it), only allowed addresses.
            with GuardedSession() as session:
                response = session.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=(connect, read),
                    stream=True,
                    allow_redirects=False,
                )
                with response:
                    body = _read_body(response, deadline)
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise ProbeError(f"invalid Prometheus URL {self.target.url!r}: {exc}") from None
        except (requests.Timeout, TimeoutError):
            raise TransientProbeError(slow) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            if _refused(exc):
                raise ProbeError(
                    f"connection refused by {self.target.url}: is Prometheus running there?"
                ) from None
            if _timed_out(exc):
                raise TransientProbeError(slow) from None
            raise TransientProbeError(
                f"could not reach Prometheus at {self.target.url}: {_reason(exc)}"
            ) from None
        if response.is_redirect:
            where = response.headers.get("Location", "?")
            raise ProbeError(
                self._clean(
                    f"{self.target.url} answered HTTP {response.status_code} redirecting to "
                    f"{where}: redirects are not followed; point the target at that URL"
                )
            )
        try:
            return _api_data(response.status_code, response.reason, body, self.target.url)
        except ProbeError as exc:
            raise type(exc)(self._clean(str(exc))) from None

    def _clean(self, value: Any) -> Any:
        """Belt and braces: the token never reaches an output line, a summary, the data
        or an error message, even if Prometheus or a proxy in front of it echoes it."""
        token = self.target.secret()
        if not token:
            return value
        if isinstance(value, str):
            return redact(value, [token])
        if isinstance(value, dict):
            return {self._clean(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._clean(v) for v in value]
        return value

    def _say(self, line: str) -> None:
        self.emit(self._clean(line))

    def _result(self, outcome: str, summary: str, data: dict[str, Any]) -> ProbeResult:
        return ProbeResult(outcome, self._clean(summary), self._clean(data))


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The body, each socket read bounded by what is left of the budget (a server
    trickling bytes cannot stretch the call past its deadline)."""
    sock = _socket_of(response)
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if sock is not None:
            with contextlib.suppress(OSError):  # closed once the whole body is in
                sock.settimeout(remaining)
        chunk = response.raw.read1(64 * 1024, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProbeError(
                f"Prometheus answered more than {MAX_BODY_BYTES // (1024 * 1024)} MB: "
                "narrow the query (aggregate with sum by (...))"
            )
        chunks.append(chunk)


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The response's socket: on the pooled connection, or (when the server closes
    after this response and http.client let go of it) under the response's file.
    None leaves each read bounded by the read timeout only."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _api_data(status: int, reason: str, body: bytes, url: str) -> tuple[dict[str, Any], list[str]]:
    """Prometheus's envelope: {"status": "success", "data": ...} or an error with its type."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or "status" not in payload:
        message = f"{url} answered HTTP {status} {reason} without Prometheus API JSON"
        if status in TRANSIENT_STATUSES:
            raise TransientProbeError(message)
        if status in (401, 403):
            raise ProbeError(
                f"{url} refused the request (HTTP {status} {reason}): check the target's token"
            )
        raise ProbeError(message + ": is this the Prometheus base URL?")
    if payload["status"] != "success":
        error_type = str(payload.get("errorType", "error"))
        error = str(payload.get("error", "unknown error"))
        message = f"Prometheus {error_type}: {error}"
        if status in TRANSIENT_STATUSES or error_type in TRANSIENT_ERROR_TYPES:
            raise TransientProbeError(message)
        raise ProbeError(message)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise ProbeError(f"{url} answered an API response without data")
    return data, [str(w) for w in payload.get("warnings") or []]


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> OSError)."""
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
        todo.extend(item.args)
    return seen


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in _causes(exc))


def _timed_out(exc: BaseException) -> bool:
    # urllib3's NewConnectionError subclasses its TimeoutError, yet a refused or
    # unresolved connection is no timeout.
    return any(
        isinstance(e, TimeoutError | urllib3.exceptions.TimeoutError)
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in _causes(exc)
    )


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason, not urllib3's pool repr."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return type(exc).__name__


# ---------------------------------------------------------------- value formatting


def _sig(x: float, digits: int = 3) -> str:
    """`digits` significant digits, no exponent for everyday magnitudes."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10**digits:
        return f"{x:,.0f}"
    if ax < 1e-4:
        return f"{x:.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(ax)))
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: float, unit: str) -> str:
    """A value as a responder reads it: ratio 0.048 -> 4.8%, seconds 0.375 -> 375 ms."""
    if math.isnan(value) or math.isinf(value):
        return _sig(value)
    if unit == "ratio":
        return f"{_sig(value * 100)}%"
    if unit == "percent":
        return f"{_sig(value)}%"
    if unit == "seconds":
        if value != 0 and abs(value) < 1:
            return f"{_sig(value * 1000)} ms"
        return f"{_sig(value)} s"
    if unit == "bytes":
        size = value
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(size) < 1024 or suffix == "TiB":
                return f"{_sig(size)} {suffix}"
            size /= 1024
    if unit:
        return f"{_sig(value, 4)} {unit}"
    return _sig(value, 4)


def _series_name(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _json_number(value: float) -> float | None:
    """JSON (and PostgreSQL's jsonb) has no NaN or Inf: those are kept as `raw` text."""
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- prometheus.query


@dataclass
class QueryParams:
    query: str
    warning_above: float | None = None
    failing_above: float | None = None
    unit: str = ""


@register
class PrometheusQuery(PrometheusProbe):
    """An instant PromQL query, its series as a table, thresholds on the highest value."""

    name = "prometheus.query"
    Params = QueryParams

    def run(self) -> ProbeResult:
        p: QueryParams = self.params
        if not p.query.strip():
            raise ProbeError("the query is empty")
        self._say(f"query: {p.query}")
        data, warnings = self._get("/api/v1/query", {"query": p.query}, server_timeout=True)
        for warning in warnings:
            self._say(f"Prometheus warning: {warning}")
        result_type = data.get("resultType")
        rows = _rows(result_type, data.get("result"))
        base = {
            "query": p.query,
            "result_type": result_type,
            "unit": p.unit,
            "warning_above": p.warning_above,
            "failing_above": p.failing_above,
            "warnings": warnings,
            "series_count": len(rows),
        }
        if not rows:
            self._say("no data")
            return self._result(
                Outcome.WARNING,
                "no data for this query: often the metric is not scraped "
                "(check the Prometheus targets)",
                base,
            )
        if result_type == "string":
            text = rows[0]["raw"]
            self._say(text)
            return self._result(Outcome.OK, text, {**base, "value": text})

        rows.sort(key=lambda r: (math.isnan(r["number"]), -_sortable(r["number"]), r["series"]))
        for line in _table(
            ["SERIES", "VALUE"],
            [[r["series"], format_value(r["number"], p.unit)] for r in rows[:MAX_ROWS]],
        ):
            self._say(line)
        if len(rows) > MAX_ROWS:
            self._say(f"… and {len(rows) - MAX_ROWS} more series")

        outcome, summary = self._judge(rows)
        series = [
            {
                "labels": r["labels"],
                "value": _json_number(r["number"]),
                "raw": r["raw"],
                "display": format_value(r["number"], p.unit),
            }
            for r in rows[:MAX_ROWS]
        ]
        numbers = [r["number"] for r in rows if not math.isnan(r["number"])]
        top = max(numbers) if numbers else math.nan
        data_out = {
            **base,
            "series": series,
            "max": _json_number(top),
            "max_display": format_value(top, p.unit),
        }
        return self._result(outcome, summary, data_out)

    def _judge(self, rows: list[dict[str, Any]]) -> tuple[str, str]:
        p: QueryParams = self.params
        numbers = [r for r in rows if not math.isnan(r["number"])]
        nan_count = len(rows) - len(numbers)
        if not numbers:
            what = "NaN" if len(rows) == 1 else f"NaN for all {len(rows)} series"
            return (
                Outcome.WARNING,
                f"{what}: zero divided by zero, e.g. a ratio with no traffic in the window",
            )
        top, low = numbers[0], numbers[-1]  # rows are sorted highest first
        shown = format_value(top["number"], p.unit)
        thresholds = p.warning_above is not None or p.failing_above is not None
        if len(rows) == 1:
            head = shown
        elif thresholds:
            head = f"max {shown} ({top['series']}) across {len(rows)} series"
        elif top["number"] == low["number"]:
            head = f"{len(rows)} series, all {shown}"
        else:  # e.g. `up`: the lowest series is the one to look at
            lowest = format_value(low["number"], p.unit)
            head = (
                f"{len(rows)} series, from {lowest} ({low['series']}) to {shown} ({top['series']})"
            )
        value = top["number"]
        if p.failing_above is not None and value > p.failing_above:
            outcome = Outcome.FAILING
            verdict = f"above the failing threshold ({format_value(p.failing_above, p.unit)})"
        elif p.warning_above is not None and value > p.warning_above:
            outcome = Outcome.WARNING
            verdict = f"above the warning threshold ({format_value(p.warning_above, p.unit)})"
        else:
            outcome = Outcome.OK
            limits = [
                f"{label} above {format_value(limit, p.unit)}"
                for label, limit in (("warning", p.warning_above), ("failing", p.failing_above))
                if limit is not None
            ]
            verdict = f"within thresholds ({', '.join(limits)})" if limits else ""
        summary = f"{head}: {verdict}" if verdict else head
        if nan_count:
            summary += f"; {nan_count} series NaN (no traffic in the window?)"
            if outcome == Outcome.OK:
                outcome = Outcome.WARNING
        return outcome, summary


def _sortable(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _number(raw: str) -> float:
    try:
        return float(raw)  # Prometheus sends "NaN", "+Inf", "-Inf" as text too
    except ValueError:
        raise ProbeError(f"Prometheus returned a value that is not a number: {raw!r}") from None


def _rows(result_type: Any, result: Any) -> list[dict[str, Any]]:
    """Normalise every result type to rows of labels + one value."""
    if result_type == "vector":
        samples = [(item.get("metric") or {}, item.get("value")) for item in result or []]
    elif result_type == "matrix":
        # A range selector (`up[5m]`): the latest sample of each series.
        samples = [
            (item.get("metric") or {}, (item.get("values") or [None])[-1]) for item in result or []
        ]
    elif result_type in ("scalar", "string"):
        samples = [({}, result)] if result else []
    else:
        raise ProbeError(f"Prometheus returned an unknown result type {result_type!r}")
    rows = []
    for labels, sample in samples:
        if not sample or len(sample) != 2:
            continue
        raw = str(sample[1])
        rows.append(
            {
                "labels": labels,
                "series": _series_name(labels) if labels or result_type != "scalar" else "scalar",
                "raw": raw,
                "number": math.nan if result_type == "string" else _number(raw),
            }
        )
    return rows


# ---------------------------------------------------------------- prometheus.targets


@register
class PrometheusTargets(PrometheusProbe):
    """Every active scrape target: failing if one is down, warning if one is unknown."""

    name = "prometheus.targets"

    def run(self) -> ProbeResult:
        data, _warnings = self._get("/api/v1/targets", {"state": "active"})
        now = datetime.now(UTC)
        targets = [_target_row(t, now) for t in data.get("activeTargets") or []]
        order = {"down": 0, "unknown": 1, "up": 2}
        targets.sort(key=lambda t: (order.get(t["health"], 1), t["job"], t["instance"]))
        counts = {"up": 0, "down": 0, "unknown": 0}
        for t in targets:
            counts[t["health"] if t["health"] in counts else "unknown"] += 1

        for line in _table(
            ["JOB", "INSTANCE", "HEALTH", "LAST SCRAPE", "LAST ERROR"],
            [
                [t["job"], t["instance"], t["health"], t["last_scrape_age"], t["last_error"]]
                for t in targets
            ],
        ):
            self._say(line)

        data_out = {"counts": counts, "targets": targets}
        if not targets:
            return self._result(
                Outcome.WARNING, "no active targets: Prometheus scrapes nothing", data_out
            )
        parts = [f"{counts['up']} up"]
        if counts["down"]:
            down = [t for t in targets if t["health"] == "down"]
            named = ", ".join(
                f"{t['job']} {t['instance']}: {_short_error(t['last_error'])}"
                for t in down[:MAX_DOWN_IN_SUMMARY]
            )
            if len(down) > MAX_DOWN_IN_SUMMARY:
                named += f", and {len(down) - MAX_DOWN_IN_SUMMARY} more"
            parts.append(f"{counts['down']} down ({named})")
        if counts["unknown"]:
            parts.append(f"{counts['unknown']} unknown (not scraped yet)")
        noun = "target" if len(targets) == 1 else "targets"
        summary = f"{len(targets)} {noun}: {', '.join(parts)}"
        if counts["down"]:
            outcome = Outcome.FAILING
        elif counts["unknown"]:
            outcome = Outcome.WARNING
        else:
            outcome = Outcome.OK
        return self._result(outcome, summary, data_out)


def _target_row(target: dict[str, Any], now: datetime) -> dict[str, Any]:
    labels = target.get("labels") or {}
    last_scrape = str(target.get("lastScrape") or "")
    return {
        "job": labels.get("job") or target.get("scrapePool") or "",
        "instance": labels.get("instance", ""),
        "health": str(target.get("health") or "unknown"),
        "last_error": str(target.get("lastError") or ""),
        "last_scrape": last_scrape,
        "last_scrape_age": _age(last_scrape, now),
        "last_scrape_duration": target.get("lastScrapeDuration"),
    }


def _age(timestamp: str, now: datetime) -> str:
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp or "never"
    if when.year <= 1:  # Go's zero time: never scraped
        return "never"
    seconds = (now - when).total_seconds()
    if seconds < 1:
        return "just now"
    return f"{format_duration(seconds)} ago"


def _short_error(error: str) -> str:
    """`Get "http://…/metrics": dial tcp 10.0.0.5:8080: connect: connection refused`
    -> `connection refused`; the full text stays in the table and the data."""
    if not error:
        return "no error reported"
    return error.rsplit(": ", 1)[-1]
