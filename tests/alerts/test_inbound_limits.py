"""What the webhooks cannot store is refused at the door with a 400 (never a 5xx:
Alertmanager would retry it for ever) and nothing is written; and an alert whose time
would be stored but not read back cannot break the incident's pages."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, AlertGroup, Delivery, StripeEvent
from api import tokens as api_tokens
from incidents.models import Incident, TimelineEvent
from incidents.rules import inbound
from tests import factories
from tests.alerts.helpers import STARTED, alert, payload
from tests.alerts.test_stripe import event, signed

pytestmark = pytest.mark.django_db


def rows() -> dict[str, int]:
    return {
        "incidents": Incident.objects.count(),
        "events": TimelineEvent.objects.count(),
        "alerts": Alert.objects.count(),
        "groups": AlertGroup.objects.count(),
        "deliveries": Delivery.objects.count(),
        "stripe": StripeEvent.objects.count(),
    }


# --- hole 5: a time at the calendar's edge ------------------------------------------------

EDGE_TIMES = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("starts", EDGE_TIMES, ids=["year-9999-14h", "year-1+14h"])
def test_an_alert_at_the_calendars_edge_is_refused_and_the_incident_still_opens(
    am_post, client, starts
):
    assert am_post(payload(alert("A"))).status_code == 200
    incident = Incident.objects.get()
    before = rows()

    response = am_post(payload(alert("A"), alert("B") | {"startsAt": starts}))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "alerts.1.startsAt" in error and "between 2000-01-01 and" in error
    assert rows() == before
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(root)
    _, token = api_tokens.issue(root, "edge")
    pages = [
        reverse("incidents:detail", args=[incident.pk]),
        reverse("incidents:export_md", args=[incident.pk]),
        reverse("incidents:export_pdf", args=[incident.pk]),
        reverse("admin:alerts_alert_changelist"),
        reverse("admin:incidents_timelineevent_changelist"),
    ]
    for url in pages:
        assert client.get(url).status_code == 200, url
    api = client.get(
        f"/api/v1/incidents/{incident.pk}/timeline", headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 200


@pytest.mark.parametrize(
    "field", ["startsAt", "endsAt"], ids=["starts-next-decade", "ends-next-decade"]
)
def test_a_time_beyond_a_year_from_now_is_refused(am_post, field):
    far = (timezone.now() + timedelta(days=400)).isoformat()
    response = am_post(payload(alert("A") | {field: far}))

    assert response.status_code == 400
    assert f"alerts.0.{field}" in response.json()["error"]
    assert rows() == dict.fromkeys(rows(), 0)


def test_times_are_stored_in_utc_and_alertmanagers_zero_end_is_no_end(am_post):
    local = alert("A") | {"startsAt": "2026-11-29T08:00:00+05:00"}  # 03:00 UTC

    assert am_post(payload(local)).status_code == 200

    row = Alert.objects.get()
    assert row.starts_at == STARTED and row.ends_at is None
    assert TimelineEvent.objects.get(kind="alert").data["starts_at"] == STARTED.isoformat()


# --- hole 6: a payload we cannot store answers 400, so it is not retried for ever ---------


def _labels(extra: dict[str, str]) -> dict:
    a = alert("A")
    return a | {"labels": a["labels"] | extra}


BAD_DELIVERIES = {
    "nul-label-value": lambda: payload(_labels({"instance": "db\x00-1"})),
    "nul-label-key": lambda: payload(_labels({"inst\x00ance": "db-1"})),
    "nul-annotation": lambda: payload(alert("A") | {"annotations": {"summary": "x\x00y"}}),
    "nul-annotation-key": lambda: payload(alert("A") | {"annotations": {"s\x00": "y"}}),
    "nul-fingerprint": lambda: payload(alert("A") | {"fingerprint": "ab\x00cd"}),
    "nul-group-key": lambda: payload(alert("A")) | {"groupKey": "{}:{a=\x00}"},
    "nul-generator-url": lambda: payload(alert("A") | {"generatorURL": "http://p/\x00"}),
    "truncated-2^31": lambda: payload(alert("A"), truncated=2**31),
    "truncated-2^63": lambda: payload(alert("A"), truncated=2**63),
    "receiver-300": lambda: payload(alert("A")) | {"receiver": "r" * 300},
}


@pytest.mark.parametrize("name", list(BAD_DELIVERIES))
def test_a_delivery_we_cannot_store_is_refused_with_400_and_nothing_written(am_post, name):
    response = am_post(BAD_DELIVERIES[name]())

    assert response.status_code == 400, response.content
    assert "Not an Alertmanager v4 payload" in response.json()["error"]
    assert "\x00" not in response.content.decode()
    assert rows() == dict.fromkeys(rows(), 0)


def test_one_bad_alert_refuses_its_whole_group_naming_it(am_post):
    good, bad = alert("A"), alert("B") | {"fingerprint": "b\x00"}

    response = am_post(payload(good, bad))

    assert response.status_code == 400
    assert "alerts.1.fingerprint" in response.json()["error"]
    assert rows() == dict.fromkeys(rows(), 0)
    assert am_post(payload(good)).status_code == 200  # fixed, it lands


def test_a_blank_summary_and_alertname_still_declare_with_a_title(am_post):
    blank = alert("A") | {"annotations": {"summary": "   "}}
    blank["labels"]["alertname"] = "  "

    assert am_post(payload(blank)).status_code == 200
    assert Incident.objects.get().title == "unnamed alert"


# --- Stripe: signed, but not storable -----------------------------------------------------


@pytest.fixture
def stripe_raw(client, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_5f4dcc3b5aa765d61d8327deb882cf99"
    settings.STRIPE_DECLARE_THRESHOLD = 0

    def post(data: dict):
        body = json.dumps(data)
        return client.post(
            "/hooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": signed(body)},
        )

    return post


def _with(obj: dict) -> dict:
    e = event()
    e["data"]["object"] |= obj
    return e


BAD_EVENTS = {
    "nul-id": lambda: event() | {"id": "evt_\x00"},
    "nul-type": lambda: event() | {"type": "charge.\x00"},
    "nul-deep": lambda: _with({"metadata": {"note": "a\x00b"}}),
    "nul-key": lambda: _with({"metadata": {"k\x00": "v"}}),
    "lone-surrogate": lambda: _with({"id": "pi_\ud800"}),
    "currency-int": lambda: _with({"currency": 5}),
    "last-payment-error-str": lambda: _with({"last_payment_error": "x"}),
    "amount-str": lambda: _with({"amount": "2500"}),
    "amount-huge": lambda: _with({"amount": 10**400}),
    "id-list": lambda: event() | {"id": ["evt_1"]},
    "created-year-9999": lambda: event() | {"created": 253402300799},
    "created-huge": lambda: event() | {"created": 2**70},
}


@pytest.mark.parametrize("name", list(BAD_EVENTS))
def test_a_signed_stripe_event_we_cannot_store_is_refused_with_400(stripe_raw, responder, name):
    factories.declare(actor=responder, category="payment")
    before = rows()

    response = stripe_raw(BAD_EVENTS[name]())

    assert response.status_code == 400, response.content
    assert (
        "cannot be stored" in response.json()["error"]
        or "not a Stripe event" in (response.json()["error"])
    )
    assert rows() == before


def test_the_window_is_stated_and_shared():
    now = timezone.now()
    assert inbound.window_text(now).startswith("between 2000-01-01 and ")
    with pytest.raises(inbound.Unstorable):
        inbound.check_instant(now + timedelta(days=400), now)
    assert inbound.check_instant(now, now) == now
