"""http.health and http.banca_health against a real HTTP server on the loopback."""

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
    REGISTRY,
    Outcome,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    get_probe,
)

TOKEN = "tok-5f2c9e1b-never-shown"
TOKEN_ENV = "LOTOOPS_TARGET_TEST_HEALTH_TOKEN"

HEALTHY_DOC = {
    "status": "ok",
    "version": "1.4.2",
    "checks": {"db": "ok", "redis": {"status": "up"}},
}
DOWN_TEXT = "upstream database unavailable\n" + "x" * 700


class Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "accept": self.headers.get("Accept"),
            }
        )
        route = self.path.split("?")[0]
        if route in ("/health", "/base/health"):
            self.reply(200, json.dumps(HEALTHY_DOC))
        elif route == "/degraded":
            self.reply(200, json.dumps({"status": "degraded", "reason": "db slow"}))
        elif route == "/component-down":
            doc = {"status": "ok", "checks": {"redis": {"status": "down"}, "db": "fail"}}
            doc["details"] = {"version": "1.4.2"}
            self.reply(200, json.dumps(doc))
        elif route == "/down":
            self.reply(503, DOWN_TEXT, "text/plain")
        elif route == "/slow":
            self.server.release.wait(3)
            # By now the probe has given up and hung up.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.reply(200, json.dumps(HEALTHY_DOC))
        elif route == "/sluggish":
            time.sleep(0.2)
            self.reply(200, json.dumps(HEALTHY_DOC))
        elif route == "/html":
            self.reply(200, "<html><body>It works!</body></html>", "text/html")
        elif route == "/echo":
            # A careless endpoint that reflects the request's headers.
            self.reply(200, json.dumps({"status": "ok", "auth": self.headers.get("Authorization")}))
        elif route == "/big":
            self.reply(200, json.dumps({"status": "ok", **{f"k{i}": i for i in range(300)}}))
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.reply(404, "not found", "text/plain")

    def reply(self, status: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, str | None]] = []
        self.release = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[HealthServer]:
    httpd = HealthServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def target(url: str, *, kind: str = "http", secret: bool = True, **options: object) -> Target:
    return Target(
        name="lotolink-api",
        kind=kind,
        url=url,
        secret_env=TOKEN_ENV if secret else "",
        options=options,
    )


def run(
    url_or_target: str | Target,
    params: dict | None = None,
    *,
    timeout: float = 3,
    probe: str = "http.health",
) -> tuple[ProbeResult, list[str]]:
    t = target(url_or_target) if isinstance(url_or_target, str) else url_or_target
    lines: list[str] = []
    result = REGISTRY[probe].build(t, params, timeout=timeout, emit=lines.append).run()
    # What the task stores must be plain JSON.
    json.dumps(dataclasses.asdict(result))
    return result, lines


def assert_secret_hidden(result: ProbeResult, lines: list[str]) -> None:
    assert TOKEN not in json.dumps(dataclasses.asdict(result))
    assert TOKEN not in "\n".join(lines)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_both_probes_are_registered_one_per_target_kind() -> None:
    assert get_probe("http.health").target_kind == "http"
    banca = get_probe("http.banca_health")
    assert banca.target_kind == "banca"
    assert issubclass(banca, get_probe("http.health"))


def test_a_healthy_endpoint_is_ok_and_its_json_is_shown(server, token) -> None:
    result, lines = run(f"{server.base}/health")

    assert result.outcome == Outcome.OK
    assert result.summary.startswith("HTTP 200 OK in ")
    assert result.data["status_code"] == 200
    assert result.data["json"] == HEALTHY_DOC
    assert isinstance(result.data["elapsed_ms"], int)
    assert lines[0] == f"GET {server.base}/health"
    assert lines[1].startswith("HTTP 200 OK in ")
    assert lines[2:] == json.dumps(HEALTHY_DOC, indent=2).splitlines()
    assert_secret_hidden(result, lines)


def test_it_sends_one_get_with_the_bearer_token_and_never_shows_it(server, token) -> None:
    result, lines = run(f"{server.base}/echo?probe=1")

    assert server.seen == [
        {
            "method": "GET",
            "path": "/echo?probe=1",
            "authorization": f"Bearer {TOKEN}",
            "accept": "application/json",
        }
    ]
    # The endpoint echoed the token back: it is scrubbed from what we keep and show.
    assert result.outcome == Outcome.OK
    assert result.data["json"]["auth"] == "Bearer •••"
    assert_secret_hidden(result, lines)


def test_without_a_secret_no_authorization_header_is_sent(server) -> None:
    run(target(f"{server.base}/health", secret=False))

    assert server.seen[0]["authorization"] is None


def test_a_status_other_than_ok_is_failing(server, token) -> None:
    result, lines = run(f"{server.base}/degraded")

    assert result.outcome == Outcome.FAILING
    assert result.summary == f'HTTP 200 OK in {result.data["elapsed_ms"]:,} ms; status "degraded"'
    assert '  "reason": "db slow"' in lines


def test_a_failing_component_under_an_ok_status_is_a_warning(server, token) -> None:
    result, _ = run(f"{server.base}/component-down")

    assert result.outcome == Outcome.WARNING
    assert result.summary.endswith("; redis down, db fail")


def test_a_503_is_failing_with_its_status_and_the_start_of_its_body(server, token) -> None:
    result, lines = run(f"{server.base}/down")

    assert result.outcome == Outcome.FAILING
    assert result.summary.startswith("HTTP 503 Service Unavailable in ")
    assert ": upstream database unavailable x" in result.summary
    assert result.data["status_code"] == 503
    assert result.data["body_excerpt"] == DOWN_TEXT[:500]
    assert "upstream database unavailable" in lines
    assert lines[-1] == "… (first 500 characters shown)"
    assert_secret_hidden(result, lines)


def test_an_endpoint_that_hangs_is_failing_within_the_time_limit(server, token) -> None:
    started = time.monotonic()
    result, lines = run(f"{server.base}/slow", timeout=0.5)
    took = time.monotonic() - started

    assert result.outcome == Outcome.FAILING
    assert result.summary.startswith(f"no answer from 127.0.0.1:{server.server_address[1]} within")
    assert lines[-1] == result.summary
    assert took < 1.0
    assert_secret_hidden(result, lines)


def test_a_slow_answer_is_a_warning(server, token) -> None:
    result, _ = run(f"{server.base}/sluggish", {"slow_seconds": 0.05})

    assert result.outcome == Outcome.WARNING
    assert result.summary.endswith("; slow: over 0.05 s")
    assert result.data["elapsed_ms"] >= 200


def test_html_where_json_is_expected_is_a_warning(server, token) -> None:
    result, lines = run(f"{server.base}/html")

    assert result.outcome == Outcome.WARNING
    assert result.summary.endswith("; body is not JSON")
    assert result.data["body_excerpt"] == "<html><body>It works!</body></html>"
    assert lines[-1] == "<html><body>It works!</body></html>"


def test_html_is_fine_when_json_is_not_expected(server, token) -> None:
    result, _ = run(f"{server.base}/html", {"expect_json": False})

    assert result.outcome == Outcome.OK


def test_long_json_is_capped_to_200_lines(server, token) -> None:
    result, lines = run(f"{server.base}/big")

    assert result.outcome == Outcome.OK
    json_lines = lines[2:]
    assert len(json_lines) == 201
    assert json_lines[-1] == "… 103 more lines not shown"


def test_a_redirect_is_failing_and_names_where_it_points(server, token) -> None:
    result, _ = run(f"{server.base}/redirect")

    assert result.outcome == Outcome.FAILING
    assert "HTTP 302" in result.summary
    assert "redirects to /health" in result.summary
    assert len(server.seen) == 1  # not followed


def test_a_closed_port_is_failing_connection_refused(token) -> None:
    port = closed_port()
    result, lines = run(f"http://127.0.0.1:{port}/health")

    assert result.outcome == Outcome.FAILING
    assert (
        result.summary == f"connection refused by 127.0.0.1:{port} (nothing listening on that port)"
    )
    assert_secret_hidden(result, lines)


def test_a_banca_target_runs_the_banca_probe_on_its_health_path(server, token) -> None:
    banca = target(f"{server.base}/base", kind="banca", health_path="/health")

    result, _ = run(banca, probe="http.banca_health")

    assert result.outcome == Outcome.OK
    assert server.seen[0]["path"] == "/base/health"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/health", "http:///health", "example.com/health"]
)
def test_a_url_we_cannot_use_is_a_permanent_error(url) -> None:
    with pytest.raises(ProbeError) as exc:
        run(url)

    assert not isinstance(exc.value, TransientProbeError)


def test_a_token_unfit_for_a_header_is_an_error_that_does_not_quote_it(server, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"{TOKEN}\r\nX-Injected: 1")

    with pytest.raises(ProbeError) as exc:
        run(f"{server.base}/health")

    assert TOKEN not in str(exc.value)
    assert server.seen == []


def test_bad_params_are_refused_when_the_probe_is_built() -> None:
    with pytest.raises(ProbeError, match="slow_seconds"):
        get_probe("http.health").build(target("http://x/"), {"slow_seconds": 0}, timeout=1)
    with pytest.raises(ProbeError, match="unknown parameter"):
        get_probe("http.health").build(target("http://x/"), {"expect": True}, timeout=1)
