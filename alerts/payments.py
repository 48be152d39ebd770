"""Stripe webhook events on payment incidents.

The signature is verified with the official library (its 5-minute tolerance); each
event id lands once. Failures (payment intents and charges that failed) go on every
open payment incident's timeline: the first of each minute at once, the rest of that
minute in one summary when it ends (`alerts.tasks.summarize_stripe_minute`), so a flood
adds at most two events a minute. Above STRIPE_DECLARE_THRESHOLD failures within
STRIPE_DECLARE_WINDOW seconds, with no payment incident open, LotoOps declares one.

Webhook endpoint errors: Stripe has no event for "your endpoint failed to take an
event" (it could not deliver it to the endpoint that failed), so LotoOps asks.
Every STRIPE_WEBHOOK_SWEEP seconds the beat lists, with the official client and the
Stripe target's key (the `stripe.webhook_status` probe), the events of the last
STRIPE_WEBHOOK_SWEEP_MINUTES not delivered to every endpoint (`delivery_success=false`:
failed or still pending, `pending_webhooks` > 0). Each such event is one failure of
type `webhook_endpoint.delivery_failed` (LotoOps' name, recorded under the id
`delivery_failed:<event id>`, so it counts once however many sweeps see it), with
the same per-minute rate limit and the same declaration threshold as the failed
payments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from diagnostics.models import Target, TargetKind
from diagnostics.probes.base import ProbeError, get_probe
from incidents.models import OPEN_STATUSES, Category, EventKind, Incident, Severity
from incidents.rules import inbound
from incidents.services import declare_incident
from incidents.timeline import append_event

from .autorun import start_diagnostics
from .models import StripeEvent, StripeLock, StripeMinute

log = logging.getLogger(__name__)
WEBHOOK_ERROR = "webhook_endpoint.delivery_failed"
FAILURES = ("payment_intent.payment_failed", "charge.failed", WEBHOOK_ERROR)
# How a summary names each kind of failure.
PLURALS = {WEBHOOK_ERROR: "webhook endpoint errors"}
DECLARE_SEVERITY = "P1"
MAX_SWEPT = 500  # events one sweep records at most (the rest: the next sweeps)
SWEEP_TIMEOUT = 15.0  # seconds for one sweep's calls to Stripe


class SignatureError(ValueError):
    """Not signed by our endpoint's secret, or signed too long ago; nothing written."""


class EventError(ValueError):
    """Signed, but not an event we can store (a NUL, a wrong type, a time outside the
    window); nothing written."""


# The fields LotoOps reads, with the types Stripe documents; anything else is ignored.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PaymentError(_Strict):
    code: StrictStr | None = Field(default=None, max_length=200)
    decline_code: StrictStr | None = Field(default=None, max_length=200)
    message: StrictStr | None = None


class FailedObject(_Strict):
    """A failed PaymentIntent or Charge, or (LotoOps' own) an undelivered event."""

    id: StrictStr = Field(default="?", max_length=255)
    type: StrictStr | None = Field(default=None, max_length=100)
    amount: StrictInt | None = Field(default=None, ge=-inbound.INT64_MAX, le=inbound.INT64_MAX)
    currency: StrictStr | None = Field(default=None, max_length=10)
    failure_code: StrictStr | None = Field(default=None, max_length=200)
    failure_message: StrictStr | None = None
    last_payment_error: PaymentError | None = None
    pending_webhooks: StrictInt | None = Field(default=None, ge=0, le=inbound.INT32_MAX)


class EventIn(_Strict):
    id: StrictStr = Field(min_length=1, max_length=100)  # StripeEvent.event_id
    type: StrictStr = Field(min_length=1, max_length=100)  # StripeEvent.type
    created: StrictInt = Field(ge=0, le=inbound.INT64_MAX)


@dataclass
class StripeOutcome:
    event: str
    duplicate: bool = False
    failure: bool = False
    incidents: list[int] = field(default_factory=list)
    declared: int | None = None

    def as_json(self) -> dict[str, object]:
        return self.__dict__.copy()


def verify(body: bytes, signature: str, secret: str) -> dict[str, Any]:
    """The event (as plain data), if `signature` (the Stripe-Signature header) signs
    `body` with `secret` within the library's tolerance."""
    if not secret:
        raise SignatureError("STRIPE_WEBHOOK_SECRET is not set: no event can be verified.")
    try:
        event = stripe.Webhook.construct_event(body.decode("utf-8"), signature, secret)
    except stripe.SignatureVerificationError:
        raise SignatureError("The Stripe-Signature does not match, or is too old.") from None
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("The body is not a Stripe event.") from None
    data = event.to_dict()
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None
    if not (isinstance(data.get("id"), str) and isinstance(data.get("type"), str)) or not (
        isinstance(obj, dict)
    ):
        raise SignatureError("The body is not a Stripe event (no id, type or data.object).")
    check_event(data)
    return data


def check_event(data: dict[str, Any], *, now: datetime | None = None) -> None:
    """EventError unless every text can be stored (keys included), the fields we read
    have Stripe's types and lengths, and `created` lies inside the window."""
    problem = inbound.find_unstorable(data)
    if problem:
        raise EventError(f"The event cannot be stored: {problem}.")
    try:
        head = EventIn.model_validate(data)
        if head.type in FAILURES:
            FailedObject.model_validate(data["data"]["object"])
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise EventError(f"The event cannot be stored: {where}: {err['msg']}.") from None
    try:
        inbound.check_instant(datetime.fromtimestamp(head.created, tz=UTC), now or timezone.now())
    except (inbound.Unstorable, OverflowError, OSError, ValueError) as exc:
        raise EventError(f"The event cannot be stored: created: {exc}.") from None


def _describe(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What a responder needs (ids, codes, amount), never card or customer details."""
    obj = FailedObject.model_validate(event["data"]["object"]).model_dump(exclude_unset=True)
    if event["type"] == WEBHOOK_ERROR:
        pending = obj.get("pending_webhooks")
        waiting = f", {pending} endpoint{'s' if pending != 1 else ''} waiting" if pending else ""
        return (
            f"Stripe webhook endpoint error: {obj.get('id', '?')} ({obj.get('type', '?')}) "
            f"not delivered to every endpoint{waiting}",
            {
                "source": "stripe",
                "event": event["id"],
                "type": WEBHOOK_ERROR,
                "object": obj.get("id", ""),
                "event_type": obj.get("type", ""),
                "pending_webhooks": pending,
                "code": "",
            },
        )
    error = obj.get("last_payment_error") or {}
    code = obj.get("failure_code") or error.get("decline_code") or error.get("code") or ""
    why = obj.get("failure_message") or error.get("message") or ""
    amount = obj.get("amount")
    currency = (obj.get("currency") or "").upper()
    data = {
        "source": "stripe",
        "event": event["id"],
        "type": event["type"],
        "object": obj.get("id", ""),
        "code": code,
        "amount": amount,
        "currency": currency,
    }
    money = f" {amount / 100:.2f} {currency}" if isinstance(amount, int) and currency else ""
    text = f"Stripe {event['type']}: {obj.get('id', '?')}{money}"
    if code or why:
        text += f" ({', '.join(p for p in (code, why[:120]) if p)})"
    return text, data


def ingest_event(event: dict[str, Any], *, now: datetime | None = None) -> StripeOutcome:
    now = now or timezone.now()
    outcome = StripeOutcome(event=event["id"])
    failure = event["type"] in FAILURES
    with transaction.atomic():
        if failure:
            StripeLock.objects.get_or_create(pk=1)
            StripeLock.objects.select_for_update().get(pk=1)
        try:
            with transaction.atomic():
                StripeEvent.objects.create(
                    event_id=event["id"][:100],
                    type=event["type"][:100],
                    created=_created(event),
                    received_at=now,
                    failure=failure,
                )
        except IntegrityError:
            outcome.duplicate = True
            return outcome
        if not failure:
            return outcome
        outcome.failure = True
        incidents = list(
            Incident.objects.filter(category=Category.PAYMENT, status__in=OPEN_STATUSES)
        )
        if not incidents and _over_threshold(now):
            incident = _declare(now)
            outcome.declared = incident.pk
            incidents = [incident]
        for incident in incidents:
            _record(incident, event, now)
            outcome.incidents.append(incident.pk)
    return outcome


def _created(event: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(event.get("created") or 0), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return timezone.now()


def _over_threshold(now: datetime) -> bool:
    threshold = settings.STRIPE_DECLARE_THRESHOLD
    if threshold <= 0:
        return False
    since = now - timedelta(seconds=settings.STRIPE_DECLARE_WINDOW)
    return StripeEvent.objects.filter(failure=True, received_at__gte=since).count() >= threshold


def _declare(now: datetime) -> Incident:
    window = int(settings.STRIPE_DECLARE_WINDOW)
    incident = declare_incident(
        title="Stripe payment failures",
        category=Category.PAYMENT,
        severity=Severity.objects.get(key=DECLARE_SEVERITY),
        actor=None,
        summary=(
            f"{settings.STRIPE_DECLARE_THRESHOLD} or more failed payments from Stripe "
            f"within {window} s."
        ),
        impacted_services=["stripe"],
        now=now,
    )
    start_diagnostics(incident)
    return incident


def _record(incident: Incident, event: dict[str, Any], now: datetime) -> None:
    text, data = _describe(event)
    minute = now.replace(second=0, microsecond=0)
    try:
        with transaction.atomic():
            row = StripeMinute.objects.create(incident=incident, minute=minute)
    except IntegrityError:
        row = StripeMinute.objects.select_for_update().get(incident=incident, minute=minute)
        row.more += 1
        row.types[data["type"]] = row.types.get(data["type"], 0) + 1
        if data["code"]:
            row.codes[data["code"]] = row.codes.get(data["code"], 0) + 1
        row.save(update_fields=["more", "types", "codes"])
        return
    append_event(incident, EventKind.ALERT, text, data=data, at=now)
    from .tasks import summarize_stripe_minute  # the task module imports this one

    due = (minute + timedelta(seconds=61) - now).total_seconds()
    pk = row.pk
    transaction.on_commit(lambda: _send_later(summarize_stripe_minute, pk, max(due, 1.0)))


def _send_later(task: Any, pk: int, countdown: float) -> None:
    try:
        task.apply_async((pk,), countdown=countdown)
    except Exception:  # the broker: the beat's sweep summarises it later
        log.warning("could not schedule the Stripe summary %s", pk)


def summarize(row_id: int, *, now: datetime | None = None) -> bool:
    """Put the minute's other failures on the timeline, once (claim, then write)."""
    now = now or timezone.now()
    with transaction.atomic():
        row = (
            StripeMinute.objects.select_for_update()
            .select_related("incident")
            .filter(pk=row_id, summarized_at__isnull=True, minute__lte=now - timedelta(minutes=1))
            .first()
        )
        if row is None:
            return False
        row.summarized_at = now
        row.save(update_fields=["summarized_at"])
        if row.more == 0:
            return True
        types = ", ".join(
            f"{n} {PLURALS.get(t, t)}" for t, n in sorted(row.types.items(), key=lambda p: -p[1])
        )
        codes = ", ".join(f"{c} ×{n}" for c, n in sorted(row.codes.items(), key=lambda p: -p[1]))
        append_event(
            row.incident,
            EventKind.ALERT,
            f"Stripe: {row.more} more failure{'s' if row.more > 1 else ''} in the minute from "
            f"{timezone.localtime(row.minute):%H:%M}: {types}" + (f" ({codes})" if codes else ""),
            data={"source": "stripe", "summary": True, "more": row.more, "types": row.types},
            at=row.minute + timedelta(minutes=1),
        )
    return True


def summarize_due(now: datetime | None = None) -> int:
    """The safety net: every ended minute not summarised yet (a lost task)."""
    now = now or timezone.now()
    ids = StripeMinute.objects.filter(
        summarized_at__isnull=True, minute__lte=now - timedelta(minutes=1)
    ).values_list("pk", flat=True)
    return sum(summarize(pk, now=now) for pk in list(ids))


def webhook_errors(
    rows: list[dict[str, Any]], *, now: datetime | None = None
) -> list[StripeOutcome]:
    """Record each event Stripe could not deliver to every endpoint (rows as the
    `stripe.webhook_status` probe lists them: id, type, pending_webhooks) once, as a
    failure on the open payment incidents (rate-limited like the others)."""
    now = now or timezone.now()
    outcomes = []
    for row in rows:
        if not isinstance(row.get("id"), str) or not row["id"]:
            continue
        event = {
            "id": f"delivery_failed:{row['id']}",
            "type": WEBHOOK_ERROR,
            "created": int(now.timestamp()),
            "data": {
                "object": {
                    "id": row["id"],
                    "object": "event",
                    "type": str(row.get("type") or ""),
                    "pending_webhooks": row.get("pending_webhooks"),
                }
            },
        }
        outcomes.append(ingest_event(event, now=now))
    return outcomes


def sweep_webhook_errors(*, now: datetime | None = None) -> int:
    """Ask Stripe (the first active Stripe target) for the recent events whose webhook
    delivery failed and record the new ones; how many were new. No target: nothing
    asked. Stripe unreachable or refusing the key: logged, asked again next sweep."""
    target = Target.objects.filter(kind=TargetKind.STRIPE, active=True).order_by("name").first()
    if target is None:
        return 0
    if refusal := target.run_refusal():
        log.warning("Stripe webhook sweep of %s refused: %s", target.name, refusal)
        return 0
    probe = get_probe("stripe.webhook_status")
    assert probe is not None  # registered by DiagnosticsConfig.ready
    params = {"minutes": settings.STRIPE_WEBHOOK_SWEEP_MINUTES, "max_events": MAX_SWEPT}
    try:
        result = probe.build(target, params, timeout=SWEEP_TIMEOUT).run()
    except ProbeError as exc:
        log.warning("Stripe webhook sweep of %s failed: %s", target.name, exc)
        return 0
    rows = result.data.get("events") or []
    return sum(not o.duplicate for o in webhook_errors(rows, now=now))
