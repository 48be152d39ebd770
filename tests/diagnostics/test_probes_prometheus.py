"""The Prometheus probes against a real Prometheus scraping a fake Lotolink backend, and
against a tiny stand-in server for what a real one cannot be made to do on cue."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from diagnostics.models import Target
from diagnostics.probes.base import (
    Outcome,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    get_probe,
)
from diagnostics.probes.prometheus import format_value
from tests.diagnostics.prometheus_server import (
    BACKEND_JOB,
    DOWN_JOB,
    ERROR_RATIO_QUERY,
    LATENCY_P95_QUERY,
    prometheus_server_fixture,  # noqa: F401  (the `prometheus_server` fixture)
)

TOKEN = "prom-token-7f3a9c1e-do-not-print"


def target(url: str, secret_env: str = "") -> Target:
    return Target(name="lotolink-prometheus", kind="prometheus", url=url, secret_env=secret_env)


def run(probe_name: str, url: str, params=None, *, timeout: float = 10, secret_env: str = ""):
    lines: list[str] = []
    probe = get_probe(probe_name).build(
        target(url, secret_env), params, timeout=timeout, emit=lines.append
    )
    return probe.run(), lines


def as_json(result: ProbeResult) -> str:
    return json.dumps(dataclasses.asdict(result), allow_nan=False)  # what a JSONField stores


# ------------------------------------------------------------------ real Prometheus


def test_up_shows_the_backend_up_and_the_worker_down(prometheus_server):
    result, lines = run("prometheus.query", prometheus_server.url, {"query": "up"})

    assert result.outcome == Outcome.OK
    values = {s["labels"]["job"]: s["value"] for s in result.data["series"]}
    assert values == {BACKEND_JOB: 1.0, DOWN_JOB: 0.0}
    worker, backend = prometheus_server.down_instance, prometheus_server.backend_instance
    assert result.summary == (
        f'2 series, from 0 (up{{instance="{worker}", job="{DOWN_JOB}"}})'
        f' to 1 (up{{instance="{backend}", job="{BACKEND_JOB}"}})'
    )
    assert lines[0] == "query: up"
    assert lines[1].split() == ["SERIES", "VALUE"]
    assert any(BACKEND_JOB in line and line.endswith(" 1") for line in lines)
    assert any(DOWN_JOB in line and line.endswith(" 0") for line in lines)
    as_json(result)


def test_a_low_error_rate_is_ok_and_reported_as_a_percentage(prometheus_server):
    prometheus_server.set_error_ratio(0.005)

    result, _ = run(
        "prometheus.query",
        prometheus_server.url,
        {"query": ERROR_RATIO_QUERY, "warning_above": 0.01, "failing_above": 0.05, "unit": "ratio"},
    )

    assert result.outcome == Outcome.OK
    assert result.data["max"] == pytest.approx(0.005, abs=1e-4)
    assert result.summary == "0.5%: within thresholds (warning above 1%, failing above 5%)"


def test_an_error_rate_above_the_failing_threshold_fails(prometheus_server):
    prometheus_server.set_error_ratio(0.2)

    result, lines = run(
        "prometheus.query",
        prometheus_server.url,
        {"query": ERROR_RATIO_QUERY, "warning_above": 0.01, "failing_above": 0.05, "unit": "ratio"},
    )

    assert result.outcome == Outcome.FAILING
    assert result.data["max"] == pytest.approx(0.2, abs=1e-3)
    assert result.summary == "20%: above the failing threshold (5%)"
    assert lines[-1].split() == ["{}", "20%"]


def test_latency_p95_from_the_histogram_is_in_milliseconds(prometheus_server):
    expected = prometheus_server.traffic.expected_p95()  # 0.375 s with the default traffic
    params = {"query": LATENCY_P95_QUERY, "unit": "seconds"}

    ok, _ = run("prometheus.query", prometheus_server.url, {**params, "warning_above": 0.5})
    slow, _ = run("prometheus.query", prometheus_server.url, {**params, "warning_above": 0.25})

    assert ok.data["max"] == pytest.approx(expected, abs=0.005)
    assert ok.outcome == Outcome.OK
    assert ok.summary == "375 ms: within thresholds (warning above 500 ms)"
    assert slow.outcome == Outcome.WARNING
    assert slow.summary == "375 ms: above the warning threshold (250 ms)"


def test_targets_show_the_down_job_with_its_error(prometheus_server):
    result, lines = run("prometheus.targets", prometheus_server.url)

    down = prometheus_server.down_instance
    assert result.outcome == Outcome.FAILING
    assert result.summary == f"2 targets: 1 up, 1 down ({DOWN_JOB} {down}: connection refused)"
    assert result.data["counts"] == {"up": 1, "down": 1, "unknown": 0}
    worker = result.data["targets"][0]
    assert (worker["job"], worker["health"]) == (DOWN_JOB, "down")
    assert "connection refused" in worker["last_error"]
    assert lines[0].split()[:5] == ["JOB", "INSTANCE", "HEALTH", "LAST", "SCRAPE"]
    assert lines[1].split()[:3] == [DOWN_JOB, down, "down"]
    assert lines[2].split()[:3] == [BACKEND_JOB, prometheus_server.backend_instance, "up"]
    as_json(result)


def test_malformed_promql_raises_prometheus_own_message(prometheus_server):
    with pytest.raises(ProbeError) as caught:
        run("prometheus.query", prometheus_server.url, {"query": "sum(rate(up[5s]"})

    assert not isinstance(caught.value, TransientProbeError)
    assert "bad_data" in str(caught.value)
    assert "parse error: unclosed left parenthesis" in str(caught.value)


def test_a_query_with_no_data_is_a_warning(prometheus_server):
    result, _ = run(
        "prometheus.query",
        prometheus_server.url,
        {"query": 'http_requests_total{job="not-scraped"}', "failing_above": 1},
    )

    assert result.outcome == Outcome.WARNING
    assert result.summary.startswith("no data for this query")


def test_a_ratio_without_traffic_is_nan_and_a_warning(prometheus_server):
    result, _ = run(
        "prometheus.query",
        prometheus_server.url,
        {"query": "vector(0) / vector(0)", "failing_above": 0.05, "unit": "ratio"},
    )

    assert result.outcome == Outcome.WARNING
    assert result.summary.startswith("NaN: zero divided by zero")
    assert result.data["series"][0]["raw"] == "NaN"
    assert result.data["series"][0]["value"] is None
    as_json(result)


def test_a_scalar_result_is_one_row(prometheus_server):
    result, lines = run(
        "prometheus.query",
        prometheus_server.url,
        {"query": "scalar(sum(up)) * 2", "failing_above": 3},
    )

    assert result.data["result_type"] == "scalar"
    assert result.outcome == Outcome.OK
    assert result.data["max"] == 2.0
    assert lines[-1].split() == ["scalar", "2"]


# ------------------------------------------------------------------ connection failures


def test_a_refused_connection_is_a_permanent_error():
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        with pytest.raises(ProbeError) as caught:
            run("prometheus.query", f"http://127.0.0.1:{port}", {"query": "up"})

    assert not isinstance(caught.value, TransientProbeError)
    assert "connection refused" in str(caught.value)


# ------------------------------------------------------------------ a stand-in Prometheus


class StandIn:
    """Answers like Prometheus and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.status = 200
        self.body: dict = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"job": BACKEND_JOB}, "value": [time.time(), "0.02"]}],
            },
        }
        self.delay = 0.0


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, **dict(self.headers.items())})
            time.sleep(state.delay)
            body = json.dumps(state.body).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_bearer_token_is_sent_and_never_shown(stand_in, monkeypatch):
    state, url = stand_in
    monkeypatch.setenv("LOTOOPS_TARGET_TEST_PROM_TOKEN", TOKEN)

    result, lines = run(
        "prometheus.query",
        url,
        {"query": "up", "warning_above": 0.01, "unit": "ratio"},
        secret_env="LOTOOPS_TARGET_TEST_PROM_TOKEN",
    )

    assert state.requests[0]["Authorization"] == f"Bearer {TOKEN}"
    assert state.requests[0]["path"].startswith("/api/v1/query?query=up")
    assert result.outcome == Outcome.WARNING
    assert result.summary == "2%: above the warning threshold (1%)"
    assert TOKEN not in as_json(result)
    assert TOKEN not in "\n".join(lines)


def test_no_authorization_header_without_a_secret(stand_in):
    state, url = stand_in

    run("prometheus.query", url, {"query": "up"})

    assert "Authorization" not in state.requests[0]


def test_a_503_is_transient(stand_in):
    state, url = stand_in
    state.status = 503
    state.body = {"status": "error", "errorType": "unavailable", "error": "starting up"}

    with pytest.raises(TransientProbeError, match="starting up"):
        run("prometheus.query", url, {"query": "up"})


def test_a_slow_answer_is_a_transient_timeout(stand_in):
    state, url = stand_in
    state.delay = 1.0

    started = time.monotonic()
    with pytest.raises(TransientProbeError, match=r"did not answer within 0\.3 s"):
        run("prometheus.query", url, {"query": "up"}, timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_a_refused_token_is_permanent(stand_in):
    state, url = stand_in
    state.status = 401
    state.body = {"message": "unauthorized"}

    with pytest.raises(ProbeError) as caught:
        run("prometheus.targets", url)

    assert not isinstance(caught.value, TransientProbeError)
    assert "HTTP 401" in str(caught.value)


def test_an_unknown_target_is_a_warning(stand_in):
    state, url = stand_in
    state.body = {
        "status": "success",
        "data": {
            "activeTargets": [
                {
                    "labels": {"job": BACKEND_JOB, "instance": "10.0.0.5:8080"},
                    "health": "unknown",
                    "lastError": "",
                    "lastScrape": "0001-01-01T00:00:00Z",
                }
            ]
        },
    }

    result, lines = run("prometheus.targets", url)

    assert result.outcome == Outcome.WARNING
    assert result.summary == "1 target: 0 up, 1 unknown (not scraped yet)"
    assert "never" in lines[1]


# ------------------------------------------------------------------ formatting


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.0483, "ratio", "4.83%"),
        (1.0, "ratio", "100%"),
        (0.375, "seconds", "375 ms"),
        (2.5, "seconds", "2.5 s"),
        (0.00042, "seconds", "0.42 ms"),
        (1536, "bytes", "1.5 KiB"),
        (1234567.0, "", "1,234,567"),
        (12.3456, "req/s", "12.35 req/s"),
        (float("inf"), "seconds", "+Inf"),
    ],
)
def test_values_are_formatted_by_unit(value, unit, shown):
    assert format_value(value, unit) == shown
