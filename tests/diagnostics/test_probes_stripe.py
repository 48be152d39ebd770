"""The Stripe probes, through the official `stripe` client against localstripe (PyPI)
on 127.0.0.1, extended by tests/diagnostics/stripe_peer.py where localstripe lacks
Stripe's behaviour (events' delivery status, date filters), and a local webhook
receiver that checks Stripe's signatures and dedupes by event id.

The scenario of the webhook tests is the incident's: the platform's webhook endpoint
was down (503) while Stripe sent events, so their delivery failed; it is back, and
the responder looks at the failed events and resends them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from diagnostics.models import Target
from diagnostics.probes.base import (
    REGISTRY,
    ProbeError,
    ProbeResult,
    TransientProbeError,
    get_probe,
)

PEER = Path(__file__).with_name("stripe_peer.py")
TOML = Path(__file__).parents[2] / "diagnostics" / "runbooks" / "lotolink.toml"
KEY_ENV = "LOTOOPS_TARGET_TEST_STRIPE_KEY"
API_KEY = "sk_test_lotoops_51Hx9kQ2eZvKYlo2C8mZ"
WHSEC_ENV = "LOTOOPS_TARGET_TEST_STRIPE_WHSEC"
WHSEC = "whsec_lotoops_test_7c4f2a9e1b3d5f60"


# --- the local Stripe -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class StripePeer:
    url: str

    def flush(self) -> None:
        requests.delete(f"{self.url}/_config/data", timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received since the last flush."""
        return requests.get(f"{self.url}/_config/requests", timeout=5).json()

    def deliveries(self) -> dict[str, dict[str, Any]]:
        return requests.get(f"{self.url}/_config/deliveries", timeout=5).json()

    def backdate(self, kind: str, object_id: str, seconds: int) -> None:
        requests.post(
            f"{self.url}/_config/backdate/{kind}/{object_id}",
            data={"seconds": seconds},
            timeout=5,
        ).raise_for_status()

    def send_webhooks_to(self, url: str, secret: str) -> None:
        """Register the platform's endpoint, as in Stripe's dashboard."""
        requests.post(
            f"{self.url}/_config/webhooks/lotolink",
            data={"url": url, "secret": secret},
            timeout=5,
        ).raise_for_status()

    def client(self) -> stripe.StripeClient:
        """The official client, to set up data as the platform would."""
        return stripe.StripeClient(
            API_KEY,
            base_addresses={"api": self.url},
            http_client=stripe.RequestsClient(timeout=5),
        )

    def wait_for_deliveries(self, event_ids: list[str], *, wait: float = 10) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            seen = self.deliveries()
            if all(i in seen and seen[i]["pending"] == 0 for i in event_ids):
                return
            time.sleep(0.05)
        raise AssertionError(f"deliveries not done after {wait} s: {self.deliveries()}")


@pytest.fixture(scope="session")
def stripe_peer_server() -> Iterator[StripePeer]:
    try:
        import localstripe  # noqa: F401
    except ImportError:
        from tests.conftest import _missing

        _missing("these tests need localstripe (pip install the dev requirements)")
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, str(PEER), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        peer = StripePeer(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{peer.url}/_config/requests", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        if process.poll() is None:
            try:
                yield peer
            finally:
                process.terminate()
                process.wait(timeout=10)
            return
        last_error = process.stderr.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"the local Stripe did not start:\n{last_error}")


@pytest.fixture(autouse=True)
def _secrets(monkeypatch) -> None:
    """The API key and the webhook signing secret, where the workers read them."""
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv(WHSEC_ENV, WHSEC)


@pytest.fixture
def peer(stripe_peer_server: StripePeer) -> StripePeer:
    stripe_peer_server.flush()
    return stripe_peer_server


# --- the platform's webhook endpoint ------------------------------------------------------


@dataclass
class Receiver:
    """The platform's /webhooks/stripe: verifies the signature with the official
    client, handles each event id once (as Stripe asks of every handler)."""

    url: str = ""
    up: bool = True
    posts: list[dict[str, Any]] = field(default_factory=list)
    handled: dict[str, str] = field(default_factory=dict)  # event id -> type
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: bytes, signature: str | None) -> int:
        with self.lock:
            if not self.up:
                self.posts.append({"verified": None})
                return 503
            try:
                event = stripe.Webhook.construct_event(body, signature, WHSEC)
            except (stripe.SignatureVerificationError, ValueError) as exc:
                self.posts.append({"verified": False, "error": str(exc)})
                return 400
            self.posts.append({"verified": True, "id": event.id, "type": event.type})
            if event.id not in self.handled:  # dedupe by event id: one effect per event
                self.handled[event.id] = event.type
            return 200

    def verified(self) -> list[str]:
        return [p["id"] for p in self.posts if p["verified"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = state.handle(body, self.headers.get("Stripe-Signature"))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/webhooks/stripe"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


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


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Bound, never listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- helpers ------------------------------------------------------------------------------


def target(url: str, **options: Any) -> Target:
    return Target(name="stripe", kind="stripe", url=url, secret_env=KEY_ENV, options=options)


def run(
    name: str, t: Target, params: dict | None = None, *, timeout: float = 10
) -> tuple[ProbeResult, list[str]]:
    lines: list[str] = []
    probe = get_probe(name).build(t, params or {}, timeout=timeout, emit=lines.append)
    return probe.run(), lines


def plan(name: str, t: Target, params: dict | None = None) -> str:
    return get_probe(name).build(t, params or {}, timeout=10).plan()


def failed_events(peer: StripePeer, receiver: Receiver, count: int) -> list[str]:
    """`count` events (customers created) whose delivery to the platform failed, after
    one that was delivered; the endpoint is back up afterwards. Ids newest first."""
    peer.send_webhooks_to(receiver.url, WHSEC)
    api = peer.client()
    api.v1.customers.create(params={"email": "ok@lotolink.test"})
    peer.wait_for_deliveries([api.v1.events.list(params={"limit": 1}).data[0].id])
    receiver.up = False
    customers = [
        api.v1.customers.create(params={"email": f"player{i}@lotolink.test"}) for i in range(count)
    ]
    events = api.v1.events.list(params={"limit": 100}).data
    by_customer = {e.data.object.id: e.id for e in events if e.type == "customer.created"}
    failed = [by_customer[c.id] for c in customers]
    peer.wait_for_deliveries(failed)
    assert all(peer.deliveries()[i]["failed"] == 1 for i in failed)
    receiver.up = True
    receiver.posts.clear()
    receiver.handled.clear()
    # The same instant for all, so "newest first" is the order of creation reversed.
    return list(reversed(failed))


def api_requests(peer: StripePeer) -> list[tuple[str, str, dict[str, str]]]:
    return [(r["method"], r["path"], r["query"]) for r in peer.requests()]


def shown(result: ProbeResult, lines: list[str]) -> str:
    return json.dumps([result.summary, result.data, result.evidence, lines])


# --- registration ------------------------------------------------------------------------


def test_every_stripe_probe_named_in_the_runbook_is_registered() -> None:
    runbook = tomllib.loads(TOML.read_text())
    every = [step for book in runbook["runbook"] for step in book["step"]]
    steps = [s for s in every if s["probe"].startswith("stripe.")]
    assert {s["key"] for s in steps} == {
        "init.payments_status",
        "pay.stripe_health",
        "pay.webhook_status",
        "pay.retry_webhooks",
    }
    for step in steps:
        probe = REGISTRY.get(step["probe"])
        assert probe is not None, f"{step['probe']} of {step['key']} is not registered"
        assert probe.target_kind == "stripe" == step["target_kind"]
        assert probe.action == (step["kind"] == "action")
        # The step's params are what the probe accepts.
        probe.build(target("https://api.stripe.com"), step.get("params", {}), timeout=5)
    finds = {s["key"]: s.get("finds", []) for s in steps}
    assert finds["pay.webhook_status"] == ["webhook_failures"]
    assert finds["init.payments_status"] == ["plays_stuck"]
    recommended = {s["key"]: s.get("recommended_by", []) for s in every}
    assert recommended["pay.retry_webhooks"] == ["webhook_failures"]
    assert recommended["pay.reconcile"] == ["plays_stuck"]


# --- stripe.health ------------------------------------------------------------------------


def test_health_reads_the_balance_once_with_the_key_and_reports_the_latency(peer) -> None:
    result, lines = run("stripe.health", target(peer.url))

    assert result.outcome == "ok"
    assert result.summary.startswith("Stripe API answered in ")
    assert result.summary.endswith(" ms (test mode key)")
    assert result.data["url"] == peer.url and result.data["elapsed_ms"] >= 0
    (sent,) = peer.requests()
    assert (sent["method"], sent["path"], sent["query"]) == ("GET", "/v1/balance", {})
    assert sent["api_key"] == API_KEY
    assert sent["stripe_version"] and sent["user_agent"].startswith("Stripe/v1 PythonBindings/")
    assert API_KEY not in shown(result, lines)


def test_a_slow_answer_is_a_warning(peer) -> None:
    result, _ = run("stripe.health", target(peer.url), {"slow_seconds": 0.000001})

    assert result.outcome == "warning"
    assert "slow: over" in result.summary


def test_a_refused_api_key_is_a_clear_error_that_does_not_show_it(peer, monkeypatch) -> None:
    wrong = "pk_live_51Hx9kQ2eZvKYlo2publishable"  # the publishable key, a common mix-up
    monkeypatch.setenv(KEY_ENV, wrong)

    with pytest.raises(ProbeError, match="Stripe refused the API key of target stripe") as err:
        run("stripe.health", target(peer.url))

    assert KEY_ENV in str(err.value) and wrong not in str(err.value)
    assert [r["path"] for r in peer.requests()] == ["/v1/balance"]  # once: no retry


def test_without_an_api_key_nothing_is_sent(peer, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)

    with pytest.raises(ProbeError, match=f"no Stripe API key: set {KEY_ENV}"):
        run("stripe.health", target(peer.url))

    assert peer.requests() == []


def test_an_api_that_refuses_connections_is_failing(closed_port) -> None:
    result, _ = run("stripe.health", target(f"http://127.0.0.1:{closed_port}"), timeout=5)

    assert result.outcome == "failing"
    assert result.summary.startswith("Stripe API unreachable: ")
    assert "connection refused" in result.summary


def test_an_api_that_does_not_answer_is_failing_within_the_time_limit(silent_port) -> None:
    started = time.monotonic()

    result, _ = run("stripe.health", target(f"http://127.0.0.1:{silent_port}"), timeout=1.5)

    assert time.monotonic() - started < 2.5
    assert result.outcome == "failing"
    assert "no answer within" in result.summary


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://api.stripe.com", "give the API base"),
        ("https://api.stripe.com/v1", "without a path"),
        ("https://sk_live_x:y@api.stripe.com", "credentials in its URL"),
    ],
)
def test_a_target_url_we_cannot_use_is_refused(url, message) -> None:
    with pytest.raises(ProbeError, match=message):
        run("stripe.health", target(url))


# --- stripe.webhook_status ----------------------------------------------------------------


def test_webhook_status_finds_the_events_whose_delivery_failed_in_the_window(peer, receiver):
    failed = failed_events(peer, receiver, 3)
    # One more failed two hours ago: outside the 60 min window.
    peer.backdate("event", failed[-1], 2 * 3600)
    in_window = failed[:-1]
    peer.requests().clear()
    before = int(time.time())

    result, lines = run("stripe.webhook_status", target(peer.url), {"minutes": 60})

    assert result.outcome == "failing"
    assert result.summary == (
        "2 events with failed webhook deliveries in the last 60 min: 2 customer.created"
    )
    details = result.evidence["webhook_failures"]
    assert details["event_ids"] == in_window
    assert details["events"] == [{"id": i, "type": "customer.created"} for i in in_window]
    assert details["minutes"] == 60 and details["count"] == 2 and details["more"] is False
    assert [row["id"] for row in result.data["events"]] == in_window
    assert all(row["pending_webhooks"] == 1 for row in result.data["events"])
    assert any(in_window[0] in line and "customer.created" in line for line in lines)
    # One list request: the failed ones, created since an hour ago, a full page.
    method, path, query = api_requests(peer)[-1]
    assert (method, path) == ("GET", "/v1/events")
    assert query.keys() == {"delivery_success", "created[gte]", "limit"}
    assert query["delivery_success"] == "false" and query["limit"] == "100"
    assert before - 3600 - 2 <= int(query["created[gte]"]) <= int(time.time()) - 3600
    assert API_KEY not in shown(result, lines) and WHSEC not in shown(result, lines)


def test_webhook_status_pages_through_and_stops_at_max_events(peer, receiver, monkeypatch):
    failed = failed_events(peer, receiver, 5)
    monkeypatch.setattr("diagnostics.probes.stripe.PAGE_SIZE", 2)  # page boundaries in play

    result, _ = run("stripe.webhook_status", target(peer.url), {"max_events": 4})

    assert result.evidence["webhook_failures"]["event_ids"] == failed[:4]
    assert result.evidence["webhook_failures"]["more"] is True
    assert result.summary.startswith("4+ events with failed webhook deliveries")
    pages = [q for m, p, q in api_requests(peer) if p == "/v1/events" and "delivery_success" in q]
    assert [(q["limit"], q.get("starting_after")) for q in pages] == [
        ("2", None),
        ("2", failed[1]),
        ("2", failed[3]),
    ]


def test_no_failed_delivery_is_ok_and_finds_nothing(peer, receiver) -> None:
    peer.send_webhooks_to(receiver.url, WHSEC)
    api = peer.client()
    api.v1.customers.create(params={"email": "ok@lotolink.test"})
    event_id = api.v1.events.list(params={"limit": 1}).data[0].id
    peer.wait_for_deliveries([event_id])

    result, _ = run("stripe.webhook_status", target(peer.url))

    assert result.outcome == "ok"
    assert result.summary == "no failed webhook deliveries in the last 60 min"
    assert result.evidence == {}
    assert receiver.verified() == [event_id]  # it was delivered, hence not listed


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"minutes": "an hour"}, "parameter minutes must be a whole number"),
        ({"minutes": 0}, "parameter minutes must be between 1 and 43200"),
        ({"minutes": -30}, "parameter minutes must be between 1 and 43200"),
        ({"minutes": 60 * 24 * 31}, "30 days, how long Stripe keeps events"),
        ({"minutes": 1.5}, "parameter minutes must be a whole number"),
        ({"window": 60}, "unknown parameter"),
    ],
)
def test_a_malformed_window_is_refused_before_anything_is_sent(peer, params, message) -> None:
    with pytest.raises(ProbeError, match=message):
        run("stripe.webhook_status", target(peer.url), params)

    assert peer.requests() == []


def test_an_api_that_does_not_answer_is_transient_within_the_time_limit(silent_port) -> None:
    started = time.monotonic()

    with pytest.raises(TransientProbeError, match="no answer within"):
        run("stripe.webhook_status", target(f"http://127.0.0.1:{silent_port}"), timeout=1)

    assert time.monotonic() - started < 2


def test_webhook_status_with_a_refused_key_says_so(peer, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk")  # too short: localstripe refuses it as Stripe would

    with pytest.raises(ProbeError, match="Stripe refused the API key"):
        run("stripe.webhook_status", target(peer.url))


# --- stripe.retry_webhooks ----------------------------------------------------------------


def retry_target(peer: StripePeer, receiver: Receiver) -> Target:
    return target(peer.url, webhook_url=receiver.url, webhook_secret_env=WHSEC_ENV)


def test_the_plan_names_every_event_and_the_endpoint_and_sends_nothing(peer, receiver) -> None:
    failed = failed_events(peer, receiver, 4)
    before = len(peer.requests())

    sentence = plan("stripe.retry_webhooks", retry_target(peer, receiver))

    assert sentence == f"resend 4 failed Stripe events ({', '.join(failed)}) to {receiver.url}"
    assert receiver.posts == []
    assert [(m, p) for m, p, _ in api_requests(peer)[before:]] == [("GET", "/v1/events")]


def test_a_long_plan_shows_ten_ids_and_counts_the_rest(peer, receiver) -> None:
    failed = failed_events(peer, receiver, 12)

    sentence = plan("stripe.retry_webhooks", retry_target(peer, receiver))

    assert sentence == (
        f"resend 12 failed Stripe events ({', '.join(failed[:10])}, … 2 more) to {receiver.url}"
    )


def test_with_nothing_failed_the_plan_says_there_is_nothing_to_resend(peer, receiver) -> None:
    with pytest.raises(ProbeError, match="no failed Stripe events in the last 60 min"):
        plan("stripe.retry_webhooks", retry_target(peer, receiver))


def test_resending_delivers_each_event_signed_as_stripe_signs(peer, receiver) -> None:
    failed = failed_events(peer, receiver, 4)

    result, lines = run("stripe.retry_webhooks", retry_target(peer, receiver))

    assert result.outcome == "ok"
    assert result.summary == (
        f"resent 4 of 4 failed Stripe events in the last 60 min to {receiver.url}"
    )
    # stripe.Webhook.construct_event accepted every signature, for the original ids.
    assert [p["verified"] for p in receiver.posts] == [True] * 4
    assert receiver.verified() == failed
    assert receiver.handled == dict.fromkeys(failed, "customer.created")
    assert [(r["id"], r["delivered"], r["status_code"]) for r in result.data["results"]] == [
        (i, True, 200) for i in failed
    ]
    assert len(lines) == 5 and all("delivered" in line for line in lines[1:])
    assert WHSEC not in shown(result, lines) and API_KEY not in shown(result, lines)


def test_the_payload_is_the_event_as_stripe_returned_it(peer, receiver) -> None:
    (event_id,) = failed_events(peer, receiver, 1)
    bodies: list[bytes] = []
    original = receiver.handle

    def keep(body: bytes, signature: str | None) -> int:
        bodies.append(body)
        return original(body, signature)

    receiver.handle = keep  # type: ignore[method-assign]
    run("stripe.retry_webhooks", retry_target(peer, receiver))

    sent = json.loads(bodies[0])
    from_api = requests.get(
        f"{peer.url}/v1/events/{event_id}", auth=(API_KEY, ""), timeout=5
    ).json()
    assert sent == from_api
    assert sent["data"]["object"]["email"] == "player0@lotolink.test"


def test_running_the_action_twice_has_each_event_handled_once(peer, receiver) -> None:
    failed = failed_events(peer, receiver, 3)

    first, _ = run("stripe.retry_webhooks", retry_target(peer, receiver))
    second, _ = run("stripe.retry_webhooks", retry_target(peer, receiver))

    assert first.outcome == second.outcome == "ok"
    # Stripe still counts them as failed (its own deliveries did), so the second run
    # sends them again: same ids, so the platform's dedupe handles each once.
    assert receiver.verified() == failed + failed
    assert receiver.handled == dict.fromkeys(failed, "customer.created")


def test_a_signature_with_another_secret_is_rejected_by_the_platform(
    peer, receiver, monkeypatch
) -> None:
    failed = failed_events(peer, receiver, 2)
    monkeypatch.setenv(WHSEC_ENV, "whsec_the_wrong_one_123456")

    result, _ = run("stripe.retry_webhooks", retry_target(peer, receiver))

    assert result.outcome == "failing"
    assert result.summary.startswith("resent 0 of 2 failed Stripe events")
    assert f"2 not accepted, e.g. {failed[0]}: HTTP 400" in result.summary
    assert [p["verified"] for p in receiver.posts] == [False, False]
    assert receiver.handled == {}
    assert "No signatures found matching the expected signature" in receiver.posts[0]["error"]


def test_an_endpoint_still_down_is_failing_with_what_was_not_delivered(peer, receiver) -> None:
    failed_events(peer, receiver, 2)
    receiver.up = False

    result, lines = run("stripe.retry_webhooks", retry_target(peer, receiver))

    assert result.outcome == "failing"
    assert "resent 0 of 2" in result.summary and "HTTP 503" in result.summary
    assert all("not accepted: HTTP 503" in line for line in lines[1:])


def test_an_endpoint_that_refuses_connections_is_failing(peer, receiver, closed_port) -> None:
    failed_events(peer, receiver, 1)
    t = target(
        peer.url,
        webhook_url=f"http://127.0.0.1:{closed_port}/webhooks/stripe",
        webhook_secret_env=WHSEC_ENV,
    )

    result, _ = run("stripe.retry_webhooks", t)

    assert result.outcome == "failing"
    assert result.data["results"][0]["error"] == "connection refused"


def test_an_endpoint_that_does_not_answer_stops_at_the_time_limit(
    peer, receiver, silent_port
) -> None:
    failed_events(peer, receiver, 3)
    t = target(
        peer.url,
        webhook_url=f"http://127.0.0.1:{silent_port}/webhooks/stripe",
        webhook_secret_env=WHSEC_ENV,
    )
    started = time.monotonic()

    result, _ = run("stripe.retry_webhooks", t, timeout=2)

    assert time.monotonic() - started < 3
    assert result.outcome == "failing" and "resent 0 of 3" in result.summary
    errors = [r["error"] for r in result.data["results"]]
    assert errors[0] == "no answer in time"
    assert errors[1:] == ["not sent: the time limit was reached"] * 2


def test_step_params_name_the_endpoint_over_the_target_options(peer, receiver) -> None:
    failed = failed_events(peer, receiver, 1)
    t = target(peer.url, webhook_url="http://127.0.0.1:1/nowhere", webhook_secret_env="NOPE")

    result, _ = run(
        "stripe.retry_webhooks",
        t,
        {"webhook_url": receiver.url, "webhook_secret_env": WHSEC_ENV, "minutes": 5},
    )

    assert result.outcome == "ok" and receiver.verified() == failed


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        ({}, None, "no webhook endpoint to resend to"),
        ({"webhook_url": "RECEIVER"}, None, "no signing secret to sign the events with"),
        (
            {"webhook_url": "RECEIVER", "webhook_secret_env": WHSEC_ENV},
            "",
            f"the webhook signing secret is not set: {WHSEC_ENV} is empty",
        ),
        ({"webhook_url": "file:///etc/passwd", "webhook_secret_env": WHSEC_ENV}, None, "not an"),
    ],
)
def test_without_an_endpoint_or_a_secret_nothing_is_sent(
    peer, receiver, monkeypatch, options, env, message
) -> None:
    failed_events(peer, receiver, 1)
    before = len(peer.requests())
    if env is not None:
        monkeypatch.setenv(WHSEC_ENV, env)
    options = {k: receiver.url if v == "RECEIVER" else v for k, v in options.items()}

    with pytest.raises(ProbeError, match=message):
        run("stripe.retry_webhooks", target(peer.url, **options))
    with pytest.raises(ProbeError, match=message):
        plan("stripe.retry_webhooks", target(peer.url, **options))

    assert receiver.posts == [] and len(peer.requests()) == before


def test_a_refused_api_key_resends_nothing(peer, receiver, monkeypatch) -> None:
    failed_events(peer, receiver, 1)
    monkeypatch.setenv(KEY_ENV, "rk_not_a_secret_key")

    with pytest.raises(ProbeError, match="Stripe refused the API key"):
        run("stripe.retry_webhooks", retry_target(peer, receiver))

    assert receiver.posts == []


def test_a_malformed_window_resends_nothing(peer, receiver) -> None:
    failed_events(peer, receiver, 1)
    before = len(peer.requests())

    for minutes in ("60m", 0, None):
        with pytest.raises(ProbeError, match="parameter minutes"):
            run("stripe.retry_webhooks", retry_target(peer, receiver), {"minutes": minutes})

    assert receiver.posts == [] and len(peer.requests()) == before


def test_the_responder_picks_the_window_starting_from_what_the_check_found() -> None:
    probe = get_probe("stripe.retry_webhooks")
    found = {"webhook_failures": {"details": {"minutes": 180, "count": 7}, "run": 3}}

    (choice,) = probe.choices({"minutes": 60}, found)

    assert (choice.name, choice.initial, choice.minimum, choice.maximum) == (
        "minutes",
        180,
        1,
        43200,
    )
    assert "found 7 in the last 180 min" in choice.help
    (plain,) = probe.choices({"minutes": 30}, {})
    assert plain.initial == 30 and "found" not in plain.help


# --- stripe.payments_status ---------------------------------------------------------------

HOUR = 3600
CARDS = {
    "requires_action": "4000002760003184",  # 3-D Secure required
    "succeeded": "4242424242424242",
}


def payment(peer: StripePeer, outcome: str | None, *, age: int) -> str:
    """A PaymentIntent of 25.00 EUR left as `outcome` (None: no payment method yet),
    created `age` seconds ago."""
    api = peer.client()
    params: dict[str, Any] = {"amount": 2500, "currency": "eur"}
    if outcome is not None:
        method = api.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": CARDS[outcome], "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        params |= {"payment_method": method.id, "confirm": True}
    intent = api.v1.payment_intents.create(params=params)
    assert intent.status == (outcome or "requires_payment_method")
    if age:
        peer.backdate("payment_intent", intent.id, age)
    return intent.id


def test_payments_pending_over_an_hour_are_counted_as_plays_stuck(peer) -> None:
    stuck = [payment(peer, "requires_action", age=2 * HOUR) for _ in range(2)]
    payment(peer, "requires_action", age=0)  # a customer authenticating right now
    payment(peer, "succeeded", age=3 * HOUR)
    payment(peer, None, age=3 * HOUR)  # never got a card: not pending at Stripe
    payment(peer, "requires_action", age=30 * HOUR)  # beyond the 24 h looked at
    before_requests = len(peer.requests())
    now = int(time.time())

    result, lines = run("stripe.payments_status", target(peer.url))

    assert result.outcome == "failing"
    assert result.summary.startswith("Stripe reachable (")
    assert result.summary.endswith(
        "; 2 payments pending over 60 min (created in the last 24 h): 2 requires_action"
    )
    assert result.evidence == {
        "plays_stuck": {
            "count": 2,
            "by_status": {"processing": 0, "requires_action": 2},
            "payment_intents": list(reversed(stuck)),
            "older_than_minutes": 60,
            "source": "stripe",
        }
    }
    assert result.data["checked"] == 4  # the two stuck, the succeeded, the one without a card
    assert [r["id"] for r in result.data["payment_intents"]] == list(reversed(stuck))
    assert any(stuck[0] in line and "requires_action" in line for line in lines)
    ((method, path, query),) = api_requests(peer)[before_requests:]
    assert (method, path) == ("GET", "/v1/payment_intents")
    assert query.keys() == {"created[gte]", "created[lte]", "limit"}
    assert abs(int(query["created[gte]"]) - (now - 24 * HOUR)) <= 2
    assert abs(int(query["created[lte]"]) - (now - HOUR)) <= 2


def test_no_pending_payment_is_ok(peer) -> None:
    payment(peer, "succeeded", age=2 * HOUR)
    payment(peer, "requires_action", age=0)

    result, _ = run("stripe.payments_status", target(peer.url))

    assert result.outcome == "ok"
    assert result.summary.endswith(
        "no payment pending over 60 min (created in the last 24 h), 1 checked"
    )
    assert result.evidence == {}


def test_the_thresholds_are_parameters(peer) -> None:
    payment(peer, "requires_action", age=20 * 60)

    result, _ = run(
        "stripe.payments_status", target(peer.url), {"older_than_minutes": 15, "lookback_hours": 1}
    )

    assert result.evidence["plays_stuck"]["count"] == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"older_than_minutes": "1h"}, "parameter older_than_minutes must be a whole number"),
        ({"older_than_minutes": 0}, "older_than_minutes must be 1 or more"),
        ({"lookback_hours": 1, "older_than_minutes": 90}, "must reach further back"),
        ({"lookback_hours": 24 * 31}, "lookback_hours must be between 1 and 720"),
    ],
)
def test_malformed_thresholds_are_refused_before_anything_is_sent(peer, params, message) -> None:
    with pytest.raises(ProbeError, match=message):
        run("stripe.payments_status", target(peer.url), params)

    assert peer.requests() == []


def test_payments_status_with_stripe_unreachable_is_failing(closed_port) -> None:
    result, _ = run("stripe.payments_status", target(f"http://127.0.0.1:{closed_port}"), timeout=1)

    assert result.outcome == "failing"
    assert "connection refused" in result.summary and result.evidence == {}


def test_payments_status_with_a_refused_key_says_so(peer, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk_")

    with pytest.raises(ProbeError, match="Stripe refused the API key"):
        run("stripe.payments_status", target(peer.url))


# --- through the engine -------------------------------------------------------------------


@pytest.mark.django_db
def test_through_the_engine_failed_webhooks_are_found_then_resent_once(
    peer, receiver, responder, rf
) -> None:
    from diagnostics import services
    from diagnostics.models import RunbookStep, RunStatus
    from diagnostics.seed import seed_runbooks
    from diagnostics.tasks import run_check
    from diagnostics.views import runbook_context
    from incidents.models import EventKind
    from tests import factories

    seed_runbooks()
    failed = failed_events(peer, receiver, 3)
    stripe_target = Target.objects.create(
        name="lotolink-stripe",
        kind="stripe",
        url=peer.url,
        secret_env=KEY_ENV,
        options={"webhook_url": receiver.url, "webhook_secret_env": WHSEC_ENV},
    )
    incident = factories.declare(actor=responder)  # a payment incident

    check = RunbookStep.objects.get(key="pay.webhook_status")
    (run,) = services.request_check(incident, check, actor=responder)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()

    assert (run.status, run.outcome, run.target_name) == (
        RunStatus.SUCCEEDED,
        "failing",
        "lotolink-stripe",
    )
    assert run.evidence["webhook_failures"]["event_ids"] == failed
    assert all(event_id in run.output for event_id in failed)
    result = incident.timeline.filter(kind=EventKind.CHECK_RESULT).latest("id")
    assert result.message == (
        "pay.webhook_status on lotolink-stripe: 3 events with failed webhook deliveries"
        " in the last 60 min: 3 customer.created"
    )
    request = rf.get("/")
    request.user = responder
    recommended = {
        item["step"].key: item["because"]
        for book in runbook_context(request, incident)["runbooks"]
        for item in book["steps"] or []  # collapsed procedures: None
        if item["recommended"]
    }
    assert recommended["pay.retry_webhooks"] == ["webhook_failures"]

    action = RunbookStep.objects.get(key="pay.retry_webhooks")
    plan = services.plan_action(action, stripe_target, {"minutes": 60})
    assert plan == f"resend 3 failed Stripe events ({', '.join(failed)}) to {receiver.url}"
    for _ in range(2):  # confirmed twice (two responders at once): handled once each
        resend = services.run_action(
            incident,
            action,
            actor=responder,
            target=stripe_target,
            params={"minutes": 60},
            plan=plan,
        )
        run_check.apply(args=(resend.pk,))
        resend.refresh_from_db()
        assert (resend.status, resend.outcome) == (RunStatus.SUCCEEDED, "ok")

    assert receiver.verified() == failed + failed
    assert receiver.handled == dict.fromkeys(failed, "customer.created")
    everything = json.dumps(
        [
            list(incident.timeline.values_list("message", "data")),
            [(r.output, r.summary, r.result, r.evidence) for r in incident.check_runs.all()],
        ],
        default=str,
    )
    assert API_KEY not in everything and WHSEC not in everything


@pytest.mark.django_db
def test_through_the_engine_bad_input_is_a_clear_failure(peer, responder, monkeypatch) -> None:
    from diagnostics import services
    from diagnostics.models import CheckRun, RunbookStep, RunStatus
    from diagnostics.seed import seed_runbooks
    from diagnostics.tasks import run_check
    from tests import factories

    seed_runbooks()
    Target.objects.create(name="lotolink-stripe", kind="stripe", url=peer.url, secret_env=KEY_ENV)
    incident = factories.declare(actor=responder)
    check = RunbookStep.objects.get(key="pay.webhook_status")
    check.params = {"minutes": "sixty"}
    check.save()

    with pytest.raises(services.CheckError, match="parameter minutes must be a whole number"):
        services.request_check(incident, check, actor=responder)
    assert not CheckRun.objects.exists()

    check.params = {"minutes": 60}
    check.save()
    wrong = "pk_live_the_publishable_key_0000"  # the wrong one of the pair
    monkeypatch.setenv(KEY_ENV, wrong)
    (run,) = services.request_check(incident, check, actor=responder)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()

    assert run.status == RunStatus.FAILED
    assert run.summary.startswith("Stripe refused the API key of target lotolink-stripe")
    assert wrong not in run.summary and wrong not in run.output
    assert [r["path"] for r in peer.requests()] == ["/v1/events"]  # refused once, not retried
