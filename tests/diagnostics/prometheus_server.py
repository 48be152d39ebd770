"""A real Prometheus (Debian's /usr/bin/prometheus) scraping a fake Lotolink backend.

Use it from any test module:

    from tests.diagnostics.prometheus_server import prometheus_server_fixture  # noqa: F401

    def test_something(prometheus_server):     # the fixture's name (no F811 shadowing)
        prometheus_server.url                      # "http://127.0.0.1:<port>"
        prometheus_server.set_error_ratio(0.2)     # 20 % of requests answer 500,
                                                   # waits until rate()[WINDOW] shows it

Two scrape jobs: `lotolink-backend` (the fake backend below: up) and `lotolink-worker`
(a port bound but never listening: down, "connection refused"). The backend serves
`http_requests_total{status="200"|"500"}` counters that grow at `requests_per_second`
and an `http_request_duration_seconds` histogram; scrapes happen every second, so
queries use short windows (`[5s]`, see WINDOW) instead of `[5m]`.

One Prometheus process per test session, however many modules import the fixture.
Without /usr/bin/prometheus the tests skip locally and fail with CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

PROMETHEUS = "/usr/bin/prometheus"
BACKEND_JOB = "lotolink-backend"
DOWN_JOB = "lotolink-worker"
WINDOW = "5s"  # rate() window for tests; scrape_interval is 1s
START_TIMEOUT = 20.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Counters start as if the backend had already served this many requests, so that
# rate()'s extrapolation never clips at zero and ratios come out exact.
HISTORY_REQUESTS = 1_000_000.0

ERROR_RATIO_QUERY = (
    f'sum(rate(http_requests_total{{job="{BACKEND_JOB}",status=~"5.."}}[{WINDOW}]))'
    f' / sum(rate(http_requests_total{{job="{BACKEND_JOB}"}}[{WINDOW}]))'
)
LATENCY_P95_QUERY = (
    "histogram_quantile(0.95, sum(rate("
    f'http_request_duration_seconds_bucket{{job="{BACKEND_JOB}"}}[{WINDOW}])) by (le))'
)


@dataclass
class Traffic:
    """What the fake backend reports; change it through PrometheusServer.set_error_ratio."""

    requests_per_second: float = 100.0
    error_ratio: float = 0.005  # share of requests answered 500
    fast_seconds: float = 0.04  # most requests take this long…
    slow_seconds: float = 0.3  # …and `slow_ratio` of them this long
    slow_ratio: float = 0.1

    def expected_p95(self) -> float:
        """What histogram_quantile(0.95, …) computes from these buckets (linear
        interpolation inside the bucket holding the 95th percentile)."""
        fast_le = next(b for b in BUCKETS if self.fast_seconds <= b)
        slow_le = next(b for b in BUCKETS if self.slow_seconds <= b)
        cumulative, lower = 0.0, 0.0
        for le in BUCKETS:
            share = (1 - self.slow_ratio) * (le == fast_le) + self.slow_ratio * (le == slow_le)
            if share and cumulative + share >= 0.95:
                return lower + (le - lower) * (0.95 - cumulative) / share
            cumulative += share
            lower = le
        raise ValueError("p95 beyond the last bucket")


@dataclass
class _Counters:
    ok: float = 0.0
    errors: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    count: float = 0.0
    total_seconds: float = 0.0


class FakeBackend:
    """The /metrics of a Lotolink backend; counters advance by wall time at each scrape."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.lock = threading.Lock()
        self.counters = _Counters()
        self._serve(HISTORY_REQUESTS)
        self.last = time.monotonic()

    def _serve(self, requests_served: float) -> None:
        t = self.traffic
        errors = requests_served * t.error_ratio
        slow = requests_served * t.slow_ratio
        fast = requests_served - slow
        c = self.counters
        c.ok += requests_served - errors
        c.errors += errors
        c.count += requests_served
        c.total_seconds += fast * t.fast_seconds + slow * t.slow_seconds
        for i, le in enumerate(BUCKETS):
            c.buckets[i] += fast * (t.fast_seconds <= le) + slow * (t.slow_seconds <= le)

    def render(self) -> str:
        with self.lock:
            now = time.monotonic()
            self._serve(self.traffic.requests_per_second * (now - self.last))
            self.last = now
            c = self.counters
            lines = [
                "# HELP http_requests_total HTTP requests served.",
                "# TYPE http_requests_total counter",
                f'http_requests_total{{status="200"}} {c.ok!r}',
                f'http_requests_total{{status="500"}} {c.errors!r}',
                "# HELP http_request_duration_seconds HTTP request duration.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            lines += [
                f'http_request_duration_seconds_bucket{{le="{le}"}} {n!r}'
                for le, n in zip(BUCKETS, c.buckets, strict=True)
            ]
            lines += [
                f'http_request_duration_seconds_bucket{{le="+Inf"}} {c.count!r}',
                f"http_request_duration_seconds_sum {c.total_seconds!r}",
                f"http_request_duration_seconds_count {c.count!r}",
            ]
        return "\n".join(lines) + "\n"


def _handler(backend: FakeBackend) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = backend.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return MetricsHandler


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PrometheusServer:
    url: str  # the Prometheus base URL, what a Target's `url` holds
    traffic: Traffic
    backend_instance: str  # "127.0.0.1:<port>" of the lotolink-backend target
    down_instance: str  # "127.0.0.1:<port>" of the lotolink-worker target (refused)
    log_path: Path

    def query(self, promql: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def set_error_ratio(self, ratio: float, *, wait: float = 15.0) -> None:
        """Make `ratio` of the backend's requests answer 500, then wait (bounded) until
        Prometheus's ERROR_RATIO_QUERY over WINDOW reads exactly that."""
        self.traffic.error_ratio = ratio
        deadline = time.monotonic() + wait
        seen = None
        while time.monotonic() < deadline:
            result = self.query(ERROR_RATIO_QUERY)
            seen = float(result[0]["value"][1]) if result else None
            if seen is not None and abs(seen - ratio) < 1e-6:
                return
            time.sleep(0.25)
        raise AssertionError(f"error ratio still {seen} after {wait} s, wanted {ratio}")


class _Running:
    """The session's one Prometheus, shared by every module that imports the fixture."""

    server: PrometheusServer | None = None
    users = 0
    stop: list = []


def _missing(reason: str) -> None:
    from tests.conftest import _missing as missing

    missing(reason)


def _start() -> tuple[PrometheusServer, list]:
    stop: list = []  # teardown steps, run in reverse
    try:
        return _start_into(stop), stop
    except BaseException:
        _run_stops(stop)
        raise


def _start_into(stop: list) -> PrometheusServer:
    traffic = Traffic()
    backend = FakeBackend(traffic)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(backend))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stop.append(httpd.server_close)
    stop.append(httpd.shutdown)
    backend_instance = f"127.0.0.1:{httpd.server_address[1]}"

    # Bound for the whole session but never listening: connections are refused and
    # no other process can take the port meanwhile.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    stop.append(closed.close)
    down_instance = f"127.0.0.1:{closed.getsockname()[1]}"

    workdir = Path(tempfile.mkdtemp(prefix="lotoops-prometheus-"))
    stop.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    config = {  # JSON is YAML: no YAML library needed
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": BACKEND_JOB, "static_configs": [{"targets": [backend_instance]}]},
            {"job_name": DOWN_JOB, "static_configs": [{"targets": [down_instance]}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
    log_path = workdir / "prometheus.log"

    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = log_path.open("ab")
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.console.templates=/nonexistent",
                "--web.console.libraries=/nonexistent",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        stop.append(lambda process=process: _kill(process))
        server = PrometheusServer(url, traffic, backend_instance, down_instance, log_path)
        if _wait_until_ready(process, server):
            return server
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    log_tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"Prometheus did not become ready in {START_TIMEOUT} s:\n{log_tail}")


def _wait_until_ready(process: subprocess.Popen, server: PrometheusServer) -> bool:
    """Ready: /-/ready answers, both targets were scraped once, and rate() over WINDOW
    has data for the counters and the histogram."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                targets = requests.get(f"{server.url}/api/v1/targets", timeout=2).json()
                health = {t["health"] for t in targets["data"]["activeTargets"]}
                if (
                    health == {"up", "down"}
                    and server.query(ERROR_RATIO_QUERY)
                    and server.query(LATENCY_P95_QUERY)
                ):
                    return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _run_stops(stop: list) -> None:
    for step in reversed(stop):
        with contextlib.suppress(Exception):  # teardown goes on whatever fails
            step()


@pytest.fixture(scope="session", name="prometheus_server")
def prometheus_server_fixture() -> Iterator[PrometheusServer]:
    """A running Prometheus scraping the fake backend; see the module docstring."""
    if not os.path.exists(PROMETHEUS):
        _missing(f"these tests need {PROMETHEUS} (apt-get install -y prometheus)")
    if _Running.server is None:
        _Running.server, _Running.stop = _start()
    _Running.users += 1
    try:
        yield _Running.server
    finally:
        _Running.users -= 1
        if _Running.users == 0:
            _run_stops(_Running.stop)
            _Running.server, _Running.stop = None, []
