"""Stripe probes: the payment steps of the runbook (sections 1 and 4), through the
official `stripe` client.

The target (kind `stripe`): `url` is the API base, https://api.stripe.com in
production; `secret_env` names the environment variable holding the API key (a
restricted key with read access to Balance, Events and PaymentIntents is enough).
Every probe builds its own `StripeClient` (never the library's global `stripe.api_key`),
pointed at that base, with a timeout on each request cut from the step's budget and
at most one network retry. The key is never shown: it and the webhook signing secret
are masked in everything a probe emits or returns.

- `stripe.health`: GET /v1/balance answers, and how fast. An API that does not
  answer (refused, timed out, 5xx) is the finding: `failing`.
- `stripe.webhook_status`: the events of the last `minutes` whose webhook delivery
  failed (Stripe's events list with `delivery_success=false`, i.e. not delivered to
  every endpoint: failed or still pending), evidence `webhook_failures`.
- `stripe.retry_webhooks` (action): resends those events to the platform's webhook
  endpoint, each signed as Stripe signs (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret,
  "t.payload")`). Resending is safe to repeat only because the platform's handler
  dedupes by event id, as Stripe requires of every handler (Stripe itself delivers
  at least once). The endpoint and the signing secret's environment variable come
  from the step's params or the target's options (`webhook_url`, `webhook_secret_env`).
  The events resent are those failed in the window when the action runs.
- `stripe.payments_status`: Stripe reachable, and the payments pending too long.
  "Pending" here means a PaymentIntent whose status is `processing` (the payment is
  under way at the bank or card network) or `requires_action` (waiting for the
  customer's authentication, e.g. 3-D Secure), created more than
  `older_than_minutes` ago (default 60) and within the last `lookback_hours` (default
  24): a play paid that way is still waiting for its money. Found: evidence
  `plays_stuck` (the runbook's reconciliation then applies).

Errors: a missing or refused API key, a refused permission, a malformed parameter or
target are ProbeError (nothing is sent after them); a Stripe that does not answer is
TransientProbeError for the webhook probes and the finding itself for the two health
checks; running out of the step's budget is ProbeTimeout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import stripe

from .base import (
    Emit,
    Outcome,
    ParamChoice,
    Probe,
    ProbeError,
    ProbeResult,
    ProbeTimeout,
    TargetLike,
    TransientProbeError,
    register,
)
from .netguard import ForbiddenAddress, GuardedSession
from .redact import redact, redact_json
from .secrets import read_secret_env

T = TypeVar("T")

MAX_NETWORK_RETRIES = 1
RETRY_PAUSE = 1.0  # seconds the client may sleep before its retry (0.5 s and jitter)
PAGE_SIZE = 100  # Stripe's largest page
EVENT_RETENTION_MINUTES = 30 * 24 * 60  # Stripe keeps events 30 days
MAX_EVENTS = 500
EVENTS_SHOWN = 50  # ids kept in evidence and data
PLAN_IDS_SHOWN = 10
PENDING_STATUSES = ("processing", "requires_action")
USER_AGENT = "LotoOps webhook resend (Stripe event replay)"


# --- params ------------------------------------------------------------------------


@dataclass
class HealthParams:
    slow_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.slow_seconds <= 0:
            raise ProbeError("parameter slow_seconds must be above 0")


def _check_minutes(minutes: int) -> None:
    if not 1 <= minutes <= EVENT_RETENTION_MINUTES:
        raise ProbeError(
            f"parameter minutes must be between 1 and {EVENT_RETENTION_MINUTES} "
            f"(30 days, how long Stripe keeps events), not {minutes}"
        )


def _check_max_events(max_events: int) -> None:
    if not 1 <= max_events <= MAX_EVENTS:
        raise ProbeError(f"parameter max_events must be between 1 and {MAX_EVENTS}")


@dataclass
class WebhookStatusParams:
    minutes: int = 60
    max_events: int = MAX_EVENTS

    def __post_init__(self) -> None:
        _check_minutes(self.minutes)
        _check_max_events(self.max_events)


@dataclass
class RetryWebhooksParams:
    minutes: int = 60
    max_events: int = 100
    # Where the platform receives Stripe's webhooks, and the variable holding that
    # endpoint's signing secret (whsec_…); else the target's options of those names.
    webhook_url: str = ""
    webhook_secret_env: str = ""

    def __post_init__(self) -> None:
        _check_minutes(self.minutes)
        _check_max_events(self.max_events)
        if self.webhook_url:
            _check_endpoint(self.webhook_url, "parameter webhook_url")
        if self.webhook_secret_env and not self.webhook_secret_env.replace("_", "").isalnum():
            raise ProbeError(
                "parameter webhook_secret_env must name an environment variable, "
                "like STRIPE_WEBHOOK_SECRET"
            )


@dataclass
class PaymentsStatusParams:
    older_than_minutes: int = 60
    lookback_hours: int = 24
    max_pages: int = 20

    def __post_init__(self) -> None:
        if self.older_than_minutes < 1:
            raise ProbeError("parameter older_than_minutes must be 1 or more")
        if not 1 <= self.lookback_hours <= 24 * 30:
            raise ProbeError("parameter lookback_hours must be between 1 and 720 (30 days)")
        if self.lookback_hours * 60 <= self.older_than_minutes:
            raise ProbeError(
                "parameter lookback_hours must reach further back than older_than_minutes"
            )
        if not 1 <= self.max_pages <= 100:
            raise ProbeError("parameter max_pages must be between 1 and 100")


def _check_endpoint(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError(f"{what} {url!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise ProbeError(f"{what} must not carry credentials")
    return url


# --- the shared part ---------------------------------------------------------------


class StripeProbe(Probe):
    """The client, the time budget, error mapping and masking every Stripe probe shares."""

    target_kind = "stripe"

    def __init__(
        self, target: TargetLike, params: Any, *, timeout: float, emit: Emit | None = None
    ) -> None:
        super().__init__(target, params, timeout=timeout, emit=emit)
        self._secrets: list[str] = []
        raw_emit = self.emit
        self.emit = lambda line: raw_emit(redact(line, self._secrets))
        self._deadline = 0.0
        self.base_url = ""  # set when the probe starts: the target's URL, checked
        self.api_key = ""  # likewise, from the target's secret_env

    # --- what subclasses provide ----------------------------------------------------

    def inspect(self) -> ProbeResult:
        raise NotImplementedError

    # --- the probe contract ---------------------------------------------------------

    def run(self) -> ProbeResult:
        with self._masked_errors():
            self._start()
            result = self.inspect()
        return ProbeResult(
            result.outcome,
            redact(result.summary, self._secrets),
            redact_json(result.data, self._secrets),
            redact_json(result.evidence, self._secrets),
        )

    def _start(self) -> None:
        self._deadline = time.monotonic() + self.timeout
        self._secrets.append(self.target.secret())
        self.base_url = self._base_url()
        self.api_key = self._api_key()

    # --- the target -----------------------------------------------------------------

    @property
    def where(self) -> str:
        return urlsplit(self.target.url).netloc or self.target.url

    def _base_url(self) -> str:
        url = self.target.url.rstrip("/")
        parts = urlsplit(url)
        if parts.password or parts.username:
            raise ProbeError(
                f"target {self.target.name} has credentials in its URL: "
                "name the API key's environment variable instead"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProbeError(
                f"target {self.target.name} has URL {self.target.url!r}: give the API base, "
                "like https://api.stripe.com"
            )
        if parts.path not in ("", "/") or parts.query:
            raise ProbeError(
                f"target {self.target.name} has URL {self.target.url!r}: give the API base "
                "without a path, like https://api.stripe.com"
            )
        return url

    def _api_key(self) -> str:
        key = self.target.secret()
        env = getattr(self.target, "secret_env", "") or "its secret_env"
        if not key:
            raise ProbeError(
                f"target {self.target.name} has no Stripe API key: set {env} where the "
                "workers run (and name it in the target's secret_env)"
            )
        if any(c.isspace() for c in key) or not key.isascii():
            raise ProbeError(
                f"the Stripe API key in {env} has spaces or characters a header cannot carry"
            )
        return key

    # --- calls ----------------------------------------------------------------------

    def time_left(self) -> float:
        return self._deadline - time.monotonic()

    def call(self, what: str, request: Callable[[stripe.StripeClient], T]) -> T:
        """One API request with what is left of the budget (and at most one retry)."""
        left = self.time_left()
        if left <= 0.05:
            raise ProbeTimeout(
                f"Stripe at {self.where}: the time limit of {_seconds(self.timeout)} s "
                f"was reached before {what}"
            )
        retries = MAX_NETWORK_RETRIES if left > 2 * RETRY_PAUSE + 1 else 0
        per_try = (left - RETRY_PAUSE * retries) / (retries + 1)
        # Only allowed addresses, never a redirect (the key would follow it).
        http = stripe.RequestsClient(timeout=per_try, session=GuardedSession())
        client = stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.base_url},
            http_client=http,
            max_network_retries=retries,
        )
        try:
            return request(client)
        except stripe.StripeError as exc:
            raise self._error(exc, what, per_try) from None
        finally:
            http.close()

    def _error(self, exc: stripe.StripeError, what: str, per_try: float) -> ProbeError:
        where = f"Stripe at {self.where}"
        env = getattr(self.target, "secret_env", "") or "secret_env"
        message = _one_line(exc.user_message or str(exc) or type(exc).__name__)
        if isinstance(exc, stripe.AuthenticationError):
            return ProbeError(
                f"Stripe refused the API key of target {self.target.name} (HTTP "
                f"{exc.http_status}): check the key in {env} where the workers run"
            )
        if isinstance(exc, stripe.PermissionError):
            return ProbeError(
                f"Stripe refused {what}: the API key in {env} lacks that permission "
                f"(HTTP {exc.http_status}; a restricted key needs read access)"
            )
        if isinstance(exc, stripe.APIConnectionError):
            if forbidden := _forbidden(exc):
                return ProbeError(f"{where}: {forbidden}")
            cause = exc.__cause__
            if isinstance(cause, requests.exceptions.ConnectTimeout):
                return TransientProbeError(
                    f"{where}: no connection within {_seconds(per_try)} s ({what})"
                )
            if isinstance(cause, requests.exceptions.Timeout):
                return TransientProbeError(
                    f"{where}: no answer within {_seconds(per_try)} s ({what})"
                )
            if isinstance(cause, requests.exceptions.SSLError):
                return ProbeError(f"{where}: TLS handshake failed ({what})")
            if _refused(cause):
                return TransientProbeError(
                    f"{where}: connection refused (nothing listening there) ({what})"
                )
            return TransientProbeError(f"{where}: no answer ({what}): {_innermost(cause)}")
        if isinstance(exc, stripe.RateLimitError):
            return TransientProbeError(f"{where}: rate limited (HTTP 429) ({what})")
        if isinstance(exc, stripe.InvalidRequestError):
            return ProbeError(f"{where} refused {what} (HTTP {exc.http_status}): {message}")
        status = exc.http_status
        if status is not None and status >= 500:
            return TransientProbeError(f"{where}: HTTP {status} ({what}): {message}")
        return ProbeError(f"{where}: {what} failed (HTTP {status}): {message}")

    @contextmanager
    def _masked_errors(self) -> Iterator[None]:
        try:
            yield
        except ProbeError as exc:
            clean = redact(str(exc), self._secrets)
            if clean != str(exc):
                raise type(exc)(clean) from None
            raise

    # --- lists ----------------------------------------------------------------------

    def pages(
        self, what: str, fetch: Callable[[stripe.StripeClient, dict[str, Any]], Any], params: dict
    ) -> Iterator[list[dict[str, Any]]]:
        """A list endpoint page by page, newest first, as the raw JSON Stripe sent."""
        after: str | None = None
        while True:
            page_params = {**params, "limit": PAGE_SIZE}
            if after:
                page_params["starting_after"] = after
            page = self.call(what, lambda client, p=page_params: fetch(client, p))
            items = _raw_items(page)
            yield items
            if not page.has_more or not items:
                return
            after = items[-1]["id"]


def _raw_items(page: Any) -> list[dict[str, Any]]:
    """The page's objects as Stripe sent them (the client's objects turned back to
    JSON would not be byte for byte what a webhook carries)."""
    response = page.last_response
    if response is not None and isinstance(response.data, dict):
        return list(response.data.get("data") or [])
    return [item.to_dict() for item in page.data]


def _forbidden(exc: BaseException) -> str:
    """The netguard refusal somewhere in what the client wrapped ("" if none)."""
    cause: BaseException | None = exc
    for _ in range(10):
        if cause is None:
            return ""
        if isinstance(cause, ForbiddenAddress):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return ""


def _refused(cause: BaseException | None) -> bool:
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def _innermost(cause: BaseException | None) -> str:
    text = str(cause) if cause is not None else "unknown network error"
    return _one_line(text, 200)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _seconds(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


# --- stripe.health ------------------------------------------------------------------


@register
class StripeHealth(StripeProbe):
    """Does the API answer, and how fast (GET /v1/balance)?"""

    name = "stripe.health"
    Params = HealthParams

    def inspect(self) -> ProbeResult:
        params: HealthParams = self.params
        self.emit(f"GET {self.base_url}/v1/balance")
        started = time.monotonic()
        try:
            balance = self.call("reading the balance", lambda c: c.v1.balance.retrieve())
        except TransientProbeError as exc:
            return _unreachable(str(exc), started, self.base_url, self.emit)
        elapsed_ms = _ms(started)
        livemode = bool(getattr(balance, "livemode", False))
        mode = "live" if livemode else "test"
        data = {"url": self.base_url, "elapsed_ms": elapsed_ms, "livemode": livemode}
        summary = f"Stripe API answered in {elapsed_ms:,} ms ({mode} mode key)"
        self.emit(summary)
        if elapsed_ms > params.slow_seconds * 1000:
            return ProbeResult(
                Outcome.WARNING, f"{summary}; slow: over {_seconds(params.slow_seconds)} s", data
            )
        return ProbeResult(Outcome.OK, summary, data)


def _unreachable(message: str, started: float, url: str, emit: Emit) -> ProbeResult:
    emit(message)
    return ProbeResult(
        Outcome.FAILING,
        f"Stripe API unreachable: {message}",
        {"url": url, "error": message, "elapsed_ms": _ms(started)},
    )


# --- stripe.webhook_status ------------------------------------------------------------


class FailedEvents(StripeProbe):
    """Listing the events whose webhook delivery failed in the window."""

    def failed_events(self, minutes: int, max_events: int) -> tuple[list[dict[str, Any]], bool]:
        """(events newest first, whether there were more than max_events)."""
        since = int(time.time()) - minutes * 60
        found: list[dict[str, Any]] = []
        params = {"delivery_success": False, "created": {"gte": since}}
        self.emit(
            f"GET {self.base_url}/v1/events?delivery_success=false&created[gte]={since}"
            f"  (since {_when(since)})"
        )
        for items in self.pages("listing events", lambda c, p: c.v1.events.list(params=p), params):
            for event in items:
                if len(found) == max_events:
                    return found, True
                found.append(event)
        return found, False


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event.get("id"),
        "type": event.get("type"),
        "created": _when(int(event.get("created") or 0)),
        "pending_webhooks": event.get("pending_webhooks"),
    }


@register
class StripeWebhookStatus(FailedEvents):
    """Events of the last `minutes` not delivered to every webhook endpoint."""

    name = "stripe.webhook_status"
    Params = WebhookStatusParams

    def inspect(self) -> ProbeResult:
        params: WebhookStatusParams = self.params
        events, more = self.failed_events(params.minutes, params.max_events)
        rows = [_event_row(e) for e in events]
        for row in rows:
            self.emit(f"{row['id']}  {row['type']}  {row['created']}")
        window = f"in the last {params.minutes} min"
        data: dict[str, Any] = {"minutes": params.minutes, "count": len(rows), "events": rows}
        if not rows:
            return ProbeResult(Outcome.OK, f"no failed webhook deliveries {window}", data)
        count = f"{len(rows)}{'+' if more else ''}"
        types = _type_counts(rows)
        summary = f"{count} events with failed webhook deliveries {window}: {types}"
        if more:
            data["truncated_at"] = params.max_events
        evidence = {
            "webhook_failures": {
                "minutes": params.minutes,
                "count": len(rows),
                "more": more,
                "event_ids": [r["id"] for r in rows[:EVENTS_SHOWN]],
                "events": [{"id": r["id"], "type": r["type"]} for r in rows[:EVENTS_SHOWN]],
            }
        }
        return ProbeResult(Outcome.FAILING, summary, data, evidence)


def _type_counts(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["type"])] = counts.get(str(row["type"]), 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda i: -i[1]))


# --- stripe.retry_webhooks --------------------------------------------------------------


@register
class StripeRetryWebhooks(FailedEvents):
    """Resend the failed events of the window to the platform's webhook endpoint."""

    name = "stripe.retry_webhooks"
    action = True
    Params = RetryWebhooksParams
    # The endpoint always receives a signature made with the secret, whichever row
    # (the step or the target's options) names it.
    secret_params = ("webhook_url", "webhook_secret_env")

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        found = (evidence.get("webhook_failures") or {}).get("details") or {}
        initial = found.get("minutes") or step_params.get("minutes") or 60
        seen = f" (the check found {found['count']} in the last {initial} min)" if found else ""
        return [
            ParamChoice(
                name="minutes",
                label="Resend the events that failed in the last … minutes",
                help="Every event of that window whose webhook delivery failed is sent "
                f"again, signed, to the platform's endpoint{seen}.",
                minimum=1,
                maximum=EVENT_RETENTION_MINUTES,
                initial=initial,
            )
        ]

    def plan(self) -> str:
        with self._masked_errors():
            self._start()
            endpoint, _secret = self._endpoint()
            params: RetryWebhooksParams = self.params
            events, more = self.failed_events(params.minutes, params.max_events)
        if not events:
            raise ProbeError(
                f"no failed Stripe events in the last {params.minutes} min: nothing to resend"
            )
        ids = [str(e["id"]) for e in events]
        shown = ", ".join(ids[:PLAN_IDS_SHOWN])
        if len(ids) > PLAN_IDS_SHOWN:
            shown += f", … {len(ids) - PLAN_IDS_SHOWN} more"
        noun = "event" if len(ids) == 1 else "events"
        cap = f" (the newest {len(ids)}; more failed)" if more else ""
        return redact(
            f"resend {len(ids)} failed Stripe {noun} ({shown}) to {endpoint}{cap}", self._secrets
        )

    def _endpoint(self) -> tuple[str, str]:
        params: RetryWebhooksParams = self.params
        options = self.target.options or {}
        url = params.webhook_url or str(options.get("webhook_url") or "")
        env = params.webhook_secret_env or str(options.get("webhook_secret_env") or "")
        if not url:
            raise ProbeError(
                f"no webhook endpoint to resend to: give the step a webhook_url parameter or "
                f"target {self.target.name} a webhook_url option"
            )
        url = _check_endpoint(url, "the webhook endpoint")
        if not env:
            raise ProbeError(
                "no signing secret to sign the events with: name its environment variable "
                f"in the step's webhook_secret_env or target {self.target.name}'s options"
            )
        secret = read_secret_env(env, "webhook_secret_env")
        if not secret:
            raise ProbeError(
                f"the webhook signing secret is not set: {env} is empty where the workers run"
            )
        self._secrets.append(secret)
        return url, secret

    def inspect(self) -> ProbeResult:
        params: RetryWebhooksParams = self.params
        endpoint, secret = self._endpoint()
        events, more = self.failed_events(params.minutes, params.max_events)
        window = f"in the last {params.minutes} min"
        data: dict[str, Any] = {"endpoint": endpoint, "minutes": params.minutes}
        if not events:
            data["results"] = []
            return ProbeResult(
                Outcome.OK, f"no failed Stripe events {window}: nothing resent", data
            )
        results = []
        with GuardedSession() as session:
            for event in events:
                results.append(self._resend(session, endpoint, secret, event))
        data["results"] = results
        sent = [r for r in results if r["delivered"]]
        failed = [r for r in results if not r["delivered"]]
        summary = (
            f"resent {len(sent)} of {len(results)} failed Stripe events {window} to {endpoint}"
        )
        if more:
            summary += f" (the newest {len(results)}; more failed: run it again)"
        if failed:
            first = failed[0]
            summary += f"; {len(failed)} not accepted, e.g. {first['id']}: {first['error']}"
            return ProbeResult(Outcome.FAILING, summary, data)
        return ProbeResult(Outcome.WARNING if more else Outcome.OK, summary, data)

    def _resend(
        self, session: requests.Session, endpoint: str, secret: str, event: dict[str, Any]
    ) -> dict[str, Any]:
        event_id, kind = str(event.get("id")), str(event.get("type"))
        row: dict[str, Any] = {"id": event_id, "type": kind, "delivered": False}
        left = self.time_left()
        if left <= 0.05:
            row["error"] = "not sent: the time limit was reached"
            self.emit(f"{event_id}  {kind}  not sent: out of time")
            return row
        # As Stripe sends it: the event's JSON, signed with the time of sending.
        payload = json.dumps(event, indent=2)
        timestamp = int(time.time())
        signature = hmac.new(
            secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": f"t={timestamp},v1={signature}",
            "User-Agent": USER_AGENT,
        }
        started = time.monotonic()
        try:
            response = session.post(
                endpoint,
                data=payload.encode(),
                headers=headers,
                timeout=(min(5.0, left), left),
                allow_redirects=False,
            )
        except ForbiddenAddress as exc:
            row["error"] = str(exc)
        except requests.exceptions.RequestException as exc:
            row["error"] = _post_error(exc)
        else:
            row["status_code"] = response.status_code
            if 200 <= response.status_code < 300:
                row["delivered"] = True
            else:
                row["error"] = f"HTTP {response.status_code}"
            response.close()
        row["elapsed_ms"] = _ms(started)
        outcome = "delivered" if row["delivered"] else f"not accepted: {row['error']}"
        self.emit(f"{event_id}  {kind}  {outcome}")
        return row


def _post_error(exc: requests.exceptions.RequestException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "no connection in time"
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    if _refused(exc):
        return "connection refused"
    return _one_line(str(exc), 160)


# --- stripe.payments_status ------------------------------------------------------------


@register
class StripePaymentsStatus(StripeProbe):
    """Stripe reachable, and PaymentIntents pending past `older_than_minutes`."""

    name = "stripe.payments_status"
    Params = PaymentsStatusParams

    def inspect(self) -> ProbeResult:
        params: PaymentsStatusParams = self.params
        now = int(time.time())
        newest = now - params.older_than_minutes * 60
        oldest = now - params.lookback_hours * 3600
        self.emit(
            f"GET {self.base_url}/v1/payment_intents?created[gte]={oldest}&created[lte]={newest}"
            f"  (created {_when(oldest)} to {_when(newest)})"
        )
        started = time.monotonic()
        checked, pages, capped = 0, 0, False
        pending: list[dict[str, Any]] = []
        try:
            for items in self.pages(
                "listing payment intents",
                lambda c, p: c.v1.payment_intents.list(params=p),
                {"created": {"gte": oldest, "lte": newest}},
            ):
                pages += 1
                checked += len(items)
                pending += [pi for pi in items if pi.get("status") in PENDING_STATUSES]
                if pages == params.max_pages:
                    capped = True
                    break
        except TransientProbeError as exc:
            if pages:
                raise
            return _unreachable(str(exc), started, self.base_url, self.emit)
        elapsed_ms = _ms(started)
        by_status = {s: sum(1 for pi in pending if pi.get("status") == s) for s in PENDING_STATUSES}
        rows = [
            {
                "id": pi.get("id"),
                "status": pi.get("status"),
                "amount": pi.get("amount"),
                "currency": pi.get("currency"),
                "created": _when(int(pi.get("created") or 0)),
            }
            for pi in pending
        ]
        for row in rows:
            self.emit(f"{row['id']}  {row['status']}  since {row['created']}")
        window = (
            f"over {params.older_than_minutes} min (created in the last {params.lookback_hours} h)"
        )
        data: dict[str, Any] = {
            "url": self.base_url,
            "elapsed_ms": elapsed_ms,
            "checked": checked,
            "pending": len(rows),
            "by_status": by_status,
            "payment_intents": rows[:EVENTS_SHOWN],
            "older_than_minutes": params.older_than_minutes,
            "lookback_hours": params.lookback_hours,
        }
        reach = f"Stripe reachable ({elapsed_ms:,} ms)"
        cap = ""
        if capped:
            data["capped_at_pages"] = params.max_pages
            cap = f"; only the newest {checked:,} read (max_pages {params.max_pages})"
        if not rows:
            outcome = Outcome.WARNING if capped else Outcome.OK
            summary = f"{reach}; no payment pending {window}, {checked:,} checked{cap}"
            return ProbeResult(outcome, summary, data)
        parts = ", ".join(f"{n} {s}" for s, n in by_status.items() if n)
        summary = f"{reach}; {len(rows)} payments pending {window}: {parts}{cap}"
        evidence = {
            "plays_stuck": {
                "count": len(rows),
                "by_status": by_status,
                "payment_intents": [r["id"] for r in rows[:EVENTS_SHOWN]],
                "older_than_minutes": params.older_than_minutes,
                "source": "stripe",
            }
        }
        return ProbeResult(Outcome.FAILING, summary, data, evidence)
