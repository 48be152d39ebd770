"""Every door that takes a payload, fuzzed with hypothesis: the Alertmanager and Stripe
webhooks (signed as Stripe signs), the declare and note forms and the API's declare and
note. Whatever arrives, the answer is never a 5xx, and a refused payload writes nothing
(row counts of every table that payload could touch). Each test asserts how many
examples it ran and prints its tally (`-s` shows it)."""

from __future__ import annotations

import json
import string
from collections import Counter
from typing import Any

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import tokens as alert_tokens
from alerts.models import Alert, AlertGroup, Delivery, StripeEvent, StripeMinute
from alerts.seed import seed_alerts
from api import tokens as api_tokens
from diagnostics.models import Target
from diagnostics.seed import seed_runbooks
from incidents.models import Category, Incident, Severity, TimelineEvent
from tests import factories
from tests.alerts.helpers import alert, payload
from tests.alerts.test_stripe import SECRET, signed

pytestmark = pytest.mark.django_db

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Text as attackers and broken senders write it: NUL, lone surrogates, control
# characters, long runs, and the ordinary.
texts = st.one_of(
    st.text(st.characters(), max_size=40),
    st.text(st.sampled_from("\x00\ud800\udfff\u202e\n\r\t\\[]()<>:&#;%"), max_size=12),
    st.builds(lambda c, n: c * n, st.sampled_from("xé\x00"), st.integers(100, 12_000)),
    st.sampled_from(["", " ", "javascript:alert(1)", "[x](javascript:1)", "db-1"]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64]),
)
times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00Z",
            "2026-11-29T03:00:00Z",
            "2026-11-29T03:00:00",
            "yesterday",
        ]
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts, st.floats(allow_nan=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)


def counts(*models: Any) -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in models}


class Tally:
    """Examples run, answers by status, 5xx and refusals that wrote something."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: Counter[int] = Counter()
        self.written_when_refused = 0

    def record(self, status: int, before: dict[str, int], after: dict[str, int]) -> None:
        self.statuses[status] += 1
        if status >= 400 and before != after:
            self.written_when_refused += 1

    def check(self) -> None:
        examples = sum(self.statuses.values())
        server_errors = sum(n for code, n in self.statuses.items() if code >= 500)
        print(
            f"\n{self.name}: {examples} examples, statuses {dict(sorted(self.statuses.items()))}, "
            f"5xx {server_errors}, rows written for refused {self.written_when_refused}"
        )
        assert examples == EXAMPLES
        assert server_errors == 0
        assert self.written_when_refused == 0


# --- Alertmanager ------------------------------------------------------------------------

ALERT_TABLES = (Incident, TimelineEvent, Alert, AlertGroup, Delivery)


@st.composite
def alertmanager_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A v4 payload with some of its fields replaced by anything."""
    one = alert(draw(st.sampled_from(["A", "B", "C"])), instance=draw(st.sampled_from("123")))
    for key, values in (
        ("startsAt", times),
        ("endsAt", times),
        ("fingerprint", texts),
        ("generatorURL", texts),
        ("labels", st.dictionaries(texts, texts, max_size=4)),
        ("annotations", st.dictionaries(texts, texts, max_size=3)),
        ("status", st.sampled_from(["firing", "resolved", "pending"])),
    ):
        if draw(st.integers(0, 4)) == 0:
            one[key] = draw(values)
    body = payload(one, group=draw(st.sampled_from(["db", "api"])))
    for key, values in (
        ("groupKey", texts),
        ("receiver", texts),
        ("truncatedAlerts", numbers),
        ("groupLabels", st.dictionaries(texts, texts, max_size=2)),
        ("commonAnnotations", st.dictionaries(texts, json_values, max_size=2)),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        body["alerts"].append(draw(st.dictionaries(texts, json_values, max_size=4)))
    return body


def test_fuzz_the_alertmanager_webhook(client, runbook):
    seed_runbooks()
    seed_alerts()
    Target.objects.create(name="db", kind="postgres", url="postgresql://x@127.0.0.1:1/x")
    _, token = alert_tokens.issue("alertmanager-fuzz")
    client.raise_request_exception = False  # a 500 is counted, not raised
    tally = Tally("alertmanager")

    @FUZZ
    @given(body=alertmanager_bodies())
    def fuzz(body: dict[str, Any]) -> None:
        before = counts(*ALERT_TABLES)
        response = client.post(
            "/hooks/alertmanager/",
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        tally.record(response.status_code, before, counts(*ALERT_TABLES))

    fuzz()
    tally.check()
    assert tally.statuses[200] and tally.statuses[400]  # both doors were reached


# --- Stripe --------------------------------------------------------------------------------

STRIPE_TABLES = (Incident, TimelineEvent, StripeEvent, StripeMinute)
STRIPE_TYPES = ["payment_intent.payment_failed", "charge.failed", "charge.succeeded"]


@st.composite
def stripe_events(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 2500,
        "currency": "dop",
        "last_payment_error": {"code": "card_declined", "message": "Declined."},
    }
    for key in ("id", "amount", "currency", "last_payment_error", "failure_code", "metadata"):
        if draw(st.booleans()):
            obj[key] = draw(json_values)
    event = {
        "id": f"evt_{draw(st.integers(0, 10**9))}",
        "object": "event",
        "type": draw(st.sampled_from(STRIPE_TYPES)),
        "created": 1_796_000_000,
        "data": {"object": obj},
    }
    for key, values in (("id", texts), ("type", texts), ("created", numbers)):
        if draw(st.integers(0, 4)) == 0:
            event[key] = draw(values)
    return event


def test_fuzz_the_stripe_webhook_with_signed_events(client, responder, settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_DECLARE_THRESHOLD = 0
    factories.declare(actor=responder, category=Category.PAYMENT)
    client.raise_request_exception = False  # a 500 is counted, not raised
    tally = Tally("stripe")

    @FUZZ
    @given(event=stripe_events())
    def fuzz(event: dict[str, Any]) -> None:
        body = json.dumps(event)
        before = counts(*STRIPE_TABLES)
        response = client.post(
            "/hooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": signed(body)},
        )
        tally.record(response.status_code, before, counts(*STRIPE_TABLES))

    fuzz()
    tally.check()
    assert tally.statuses[200] and tally.statuses[400]


# --- the pages' forms and the API ---------------------------------------------------------

INCIDENT_TABLES = (Incident, TimelineEvent)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


form_texts = texts.filter(_encodable)  # a form body is UTF-8: no lone surrogates


@st.composite
def declarations(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": draw(st.one_of(form_texts, st.text(string.ascii_letters, min_size=1))),
        "category": draw(st.sampled_from([*Category.values, "outage", ""])),
        "severity": draw(st.sampled_from(["P1", "P2", "P9"])),
        "summary": draw(form_texts),
        "impacted_services": draw(form_texts),
    }
    if draw(st.booleans()):
        data["affected_users"] = draw(numbers)
    return data


def test_fuzz_the_declare_and_note_forms(client, responder):
    client.force_login(responder)
    severities = dict(Severity.objects.values_list("key", "pk"))
    incident = factories.declare(actor=responder)
    tally = Tally("declare and note forms")

    @FUZZ
    @given(data=declarations(), note=form_texts)
    def fuzz(data: dict[str, Any], note: str) -> None:
        client.raise_request_exception = False
        data = data | {"severity": severities.get(data["severity"], 999)}
        before = counts(*INCIDENT_TABLES)
        status = client.post(reverse("incidents:declare"), data).status_code
        tally.record(status, before, counts(*INCIDENT_TABLES))
        before = counts(*INCIDENT_TABLES)
        noted = client.post(
            reverse("incidents:note", args=[incident.pk]),
            {"text": note},
            HTTP_HX_REQUEST="true",
        ).status_code
        assert noted < 500, noted
        assert noted < 400 or counts(*INCIDENT_TABLES) == before

    fuzz()
    tally.check()
    assert tally.statuses[302] and tally.statuses[422]


def test_fuzz_the_apis_declare_and_note(client, responder):
    _, token = api_tokens.issue(responder, "fuzz")
    headers = {"Authorization": f"Bearer {token}"}
    incident = factories.declare(actor=responder)
    tally = Tally("API declare and note")

    @FUZZ
    @given(data=declarations(), services=st.lists(texts, max_size=3), note=texts)
    def fuzz(data: dict[str, Any], services: list[str], note: str) -> None:
        client.raise_request_exception = False
        body = data | {"impacted_services": services}
        before = counts(*INCIDENT_TABLES)
        status = client.post(
            "/api/v1/incidents", json.dumps(body), content_type="application/json", headers=headers
        ).status_code
        tally.record(status, before, counts(*INCIDENT_TABLES))
        before = counts(*INCIDENT_TABLES)
        noted = client.post(
            f"/api/v1/incidents/{incident.pk}/notes",
            json.dumps({"text": note}),
            content_type="application/json",
            headers=headers,
        ).status_code
        assert noted < 500, noted
        assert noted < 400 or counts(*INCIDENT_TABLES) == before

    fuzz()
    tally.check()
    assert tally.statuses[201] and tally.statuses[422]
