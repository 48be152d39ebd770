"""Stripe failures under a flood, from several processes at once: 500 events in
well under a minute (failed payments and charges posted to the webhook, webhook
endpoint errors recorded by the sweep) give each open payment incident one event at
once and one summary per minute, with the right counts; and the webhook endpoint
errors themselves, found through the official client against a local Stripe."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection
from django.utils import timezone

from alerts import payments
from alerts.models import StripeEvent, StripeMinute
from diagnostics.models import Target
from incidents.models import Category, EventKind
from tests import factories
from tests.alerts.stripe_flooder import post_events, record_webhook_errors
from tests.alerts.test_stripe import SECRET, event
from tests.diagnostics.test_probes_stripe import (  # noqa: F401  (fixtures)
    KEY_ENV,
    _secrets,
    failed_events,
    peer,
    receiver,
    stripe_peer_server,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POSTERS, THREADS, PER_POSTER, ERRORS = 4, 4, 100, 100
CHARGE, PAYMENT = "charge.failed", "payment_intent.payment_failed"


def stripe_lines(incident):
    return incident.timeline.filter(kind=EventKind.ALERT, data__source="stripe")


def test_a_flood_from_several_processes_is_one_event_and_one_summary_per_minute(
    responder, settings
):
    settings.STRIPE_DECLARE_THRESHOLD = 0
    incident = factories.declare(actor=responder, category=Category.PAYMENT)
    parts = urlsplit(settings.DATABASE_URL)
    test_db = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(POSTERS + 1)
    results = spawn.Queue()
    processes = []
    for p in range(POSTERS):
        events = [
            event(p * PER_POSTER + n, CHARGE if n % 4 == 0 else PAYMENT) for n in range(PER_POSTER)
        ]
        processes.append(
            spawn.Process(
                target=post_events, args=(test_db, SECRET, events, THREADS, barrier, results)
            )
        )
    rows = [
        {"id": f"evt_undelivered_{n}", "type": "customer.created", "pending_webhooks": 1}
        for n in range(ERRORS)
    ]
    processes.append(
        spawn.Process(target=record_webhook_errors, args=(test_db, rows, barrier, results))
    )
    started = timezone.now()
    for process in processes:
        process.start()
    reports = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    took = timezone.now() - started

    outcomes = Counter(item for report in reports for item in report)
    assert outcomes == {200: POSTERS * PER_POSTER, "new": ERRORS}, outcomes
    total = POSTERS * PER_POSTER + ERRORS
    assert StripeEvent.objects.filter(failure=True).count() == total
    minutes = list(StripeMinute.objects.filter(incident=incident).order_by("minute"))
    assert 1 <= len(minutes) <= 2 + took // timedelta(minutes=1), (len(minutes), took)
    # Before each minute ends: only its first failure is on the timeline.
    assert stripe_lines(incident).count() == len(minutes)

    assert payments.summarize_due(timezone.now() + timedelta(minutes=2)) == len(minutes)
    assert payments.summarize_due(timezone.now() + timedelta(minutes=3)) == 0  # once

    types: Counter[str] = Counter()
    for row in minutes:
        end = row.minute + timedelta(minutes=1)
        # A minute's failures fall in [minute, end); its summary is dated at its end
        # (where the next minute's failures begin).
        in_minute = stripe_lines(incident).filter(created_at__gte=row.minute, created_at__lte=end)
        firsts = [e for e in in_minute if not e.data.get("summary") and e.created_at < end]
        summaries = [e for e in in_minute if e.data.get("summary") and e.created_at > row.minute]
        assert len(firsts) == 1, [e.message for e in in_minute]
        types[firsts[0].data["type"]] += 1
        if row.more:
            assert len(summaries) == 1
            assert summaries[0].data["more"] == row.more == sum(row.types.values())
            assert summaries[0].message.startswith(f"Stripe: {row.more} more failures")
            types.update(summaries[0].data["types"])
        else:
            assert summaries == []
    assert types == {
        PAYMENT: 300,
        CHARGE: 100,
        payments.WEBHOOK_ERROR: 100,
    }
    assert stripe_lines(incident).count() <= 2 * len(minutes)


@pytest.mark.usefixtures("stripe_peer_server")
def test_the_sweep_puts_stripes_undelivered_events_on_the_payment_incident(
    peer,  # noqa: F811  (the fixture)
    receiver,  # noqa: F811
    responder,
    settings,
):
    settings.STRIPE_DECLARE_THRESHOLD = 0
    incident = factories.declare(actor=responder, category=Category.PAYMENT)
    undelivered = failed_events(peer, receiver, 3)
    Target.objects.create(name="stripe", kind="stripe", url=peer.url, secret_env=KEY_ENV)

    assert payments.sweep_webhook_errors() == 3
    assert payments.sweep_webhook_errors() == 0  # each failed event counts once

    [first] = stripe_lines(incident)
    assert first.data["type"] == payments.WEBHOOK_ERROR
    assert first.data["object"] in undelivered and first.data["event_type"] == "customer.created"
    assert first.message.startswith(f"Stripe webhook endpoint error: {first.data['object']}")
    row = StripeMinute.objects.get(incident=incident)
    assert row.more == 2 and row.types == {payments.WEBHOOK_ERROR: 2}
    assert payments.summarize(row.pk, now=timezone.now() + timedelta(minutes=2))
    summary = stripe_lines(incident).get(data__summary=True)
    assert "2 more failures" in summary.message and "2 webhook endpoint errors" in summary.message
    recorded = set(StripeEvent.objects.values_list("event_id", flat=True))
    assert recorded == {f"delivery_failed:{i}" for i in undelivered}


def test_without_a_stripe_target_the_sweep_asks_nothing(db):
    assert payments.sweep_webhook_errors() == 0
    assert not StripeEvent.objects.exists()
