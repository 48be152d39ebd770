"""Stripe webhook events on payment incidents: verified, once, rate-limited."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import payments
from alerts.models import StripeEvent, StripeMinute
from alerts.tasks import summarize_stripe_minute
from incidents.models import Category, EventKind, Incident
from tests import factories

pytestmark = pytest.mark.django_db
SECRET = "whsec_test_5f4dcc3b5aa765d61d8327deb882cf99"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_DECLARE_THRESHOLD = 0


def event(n: int = 1, kind: str = "payment_intent.payment_failed") -> dict:
    obj = {
        "id": f"pi_{n}",
        "object": "payment_intent",
        "amount": 2500,
        "currency": "dop",
        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
    }
    if kind == "charge.failed":
        obj = {"id": f"ch_{n}", "object": "charge", "amount": 1000, "currency": "usd",
               "failure_code": "expired_card", "failure_message": "Expired."}  # fmt: skip
    return {
        "id": f"evt_{n}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def signed(body: str, *, secret: str = SECRET, at: int | None = None) -> str:
    at = at or int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


@pytest.fixture
def stripe_post(client):
    def post(payload: dict, **sign):
        body = json.dumps(payload)
        return client.post(
            "/hooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": signed(body, **sign)},
        )

    return post


@pytest.fixture
def payment_incident(responder):
    return factories.declare(actor=responder, category=Category.PAYMENT)


def stripe_events(incident: Incident):
    return incident.timeline.filter(kind=EventKind.ALERT, data__source="stripe")


def test_a_failed_payment_appears_on_the_open_payment_incident(stripe_post, payment_incident):
    response = stripe_post(event(1))

    assert response.status_code == 200, response.content
    assert response.json()["incidents"] == [payment_incident.pk]
    [line] = stripe_events(payment_incident)
    assert line.message == (
        "Stripe payment_intent.payment_failed: pi_1 25.00 DOP "
        "(card_declined, Your card was declined.)"
    )


def test_a_failed_charge_appears_too(stripe_post, payment_incident):
    stripe_post(event(2, "charge.failed"))

    assert stripe_events(payment_incident).get().message.startswith("Stripe charge.failed: ch_2")


def test_the_same_event_twice_lands_once(stripe_post, payment_incident):
    stripe_post(event(1))
    second = stripe_post(event(1))

    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert StripeEvent.objects.count() == 1
    assert stripe_events(payment_incident).count() == 1


def test_other_events_are_recorded_but_touch_no_incident(stripe_post, payment_incident):
    response = stripe_post(event(3, "payment_intent.succeeded"))

    assert response.json()["failure"] is False
    assert not stripe_events(payment_incident).exists()


def test_a_flood_becomes_one_event_then_one_summary_per_minute(payment_incident):
    start = timezone.now().replace(second=5, microsecond=0) + timedelta(minutes=1)
    for n in range(40):
        kind = "charge.failed" if n % 4 == 0 else "payment_intent.payment_failed"
        payments.ingest_event(event(n, kind), now=start + timedelta(seconds=n))
    assert stripe_events(payment_incident).count() == 1
    row = StripeMinute.objects.get()

    assert summarize_stripe_minute(row.pk) is False  # the minute is not over yet
    later = start + timedelta(minutes=2)
    assert payments.summarize(row.pk, now=later) is True
    assert payments.summarize(row.pk, now=later) is False  # once

    summary = stripe_events(payment_incident).get(data__summary=True)
    assert summary.message.startswith("Stripe: 39 more failures in the minute from ")
    # The first (a charge) is on the timeline already: 30 + 9 more.
    assert "30 payment_intent.payment_failed, 9 charge.failed" in summary.message
    assert "(card_declined ×30, expired_card ×9)" in summary.message


def test_without_an_open_payment_incident_failures_are_only_recorded(stripe_post):
    response = stripe_post(event(1))

    assert response.status_code == 200 and response.json()["incidents"] == []
    assert not Incident.objects.exists()


def test_above_the_threshold_a_payment_incident_is_declared_once(stripe_post, settings, runbook):
    settings.STRIPE_DECLARE_THRESHOLD = 3
    outcomes = [stripe_post(event(n)).json() for n in range(5)]

    incident = Incident.objects.get()
    assert [o["declared"] for o in outcomes] == [None, None, incident.pk, None, None]
    assert (incident.category, incident.severity.key, incident.declared_by) == (
        Category.PAYMENT,
        "P1",
        None,
    )
    assert stripe_events(incident).count() == 1


# --- bad input: a clear 4xx and nothing written ---------------------------------------


def test_a_stale_signature_is_refused(stripe_post, payment_incident):
    response = stripe_post(event(1), at=int(time.time()) - 3600)

    assert response.status_code == 400 and "too old" in response.json()["error"]
    assert not StripeEvent.objects.exists()
    assert not stripe_events(payment_incident).exists()


def test_a_wrong_secret_is_refused(stripe_post):
    response = stripe_post(event(1), secret="whsec_someone_else")

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_missing_signature_is_refused(client):
    response = client.post("/hooks/stripe/", data="{}", content_type="application/json")

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_without_a_configured_secret_nothing_is_accepted(stripe_post, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""

    response = stripe_post(event(1))

    assert response.status_code == 400 and "STRIPE_WEBHOOK_SECRET" in response.json()["error"]
    assert not StripeEvent.objects.exists()


def test_a_signed_body_that_is_not_json_is_refused(client):
    body = "{not json"
    response = client.post(
        "/hooks/stripe/",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": signed(body)},
    )

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_10_mb_body_is_refused(stripe_post):
    response = stripe_post(event(1) | {"padding": "x" * (10 * 1024 * 1024)})

    assert response.status_code == 413
    assert not StripeEvent.objects.exists()
