"""A payment incident walked from the alert to verified resolution, in the browser.

A real Prometheus rule fires through a real Alertmanager into LotoOps' receiver and
declares a payment incident, whose diagnostics are queued for a real worker. The
responder opens the page: the money-at-risk card shows the stuck plays' exact
totals; more plays get stuck, the next reading lands and the card follows without a
reload. They acknowledge, mitigate and mark it resolved: refused live, with the
failing evidence, while plays are stuck; once the platform pays them, "Verify
again" runs the recovery checks twice and the incident resolves, live; the reading
taken at resolution (0 plays at risk) reaches the card and the post-mortem.

One platform database (tests/impact/platform_db.py: plays with amounts, currencies,
bancas and Stripe states) serves both the recovery check pay.pending_plays and the
money probe pay.money_at_risk, through the one `lotolink-db` target."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from django.utils import timezone

from alerts import tokens
from alerts.seed import seed_alerts
from diagnostics.models import CheckRun, RecoveryState, Target
from diagnostics.recovery import latest_verification
from diagnostics.tasks import sample_money_at_risk
from incidents.models import Category, EventKind, ImpactSample, Incident, PostMortem, Status
from tests.alerts.alerting_stack import ALERTMANAGER, PROMETHEUS, Stack, start_stack
from tests.conftest import _missing
from tests.diagnostics import pg_helpers as pg
from tests.diagnostics.test_probes_rabbitmq import SECRET_ENV as AMQP_ENV
from tests.diagnostics.test_probes_stripe import API_KEY, KEY_ENV
from tests.diagnostics.test_recovery import (  # noqa: F401  (fixtures)
    payment_peers,
    queues,
    stripe_peer_server,
)
from tests.impact.platform_db import (  # noqa: F401  (fixture)
    PLATFORM_URL,
    add_plays,
    fix_plays,
    platform_db,
    reset_plays,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

STUCK = "lotolink_plays_stuck_pending"
SAMPLE_EVERY = 2.0  # MONEY_AT_RISK_INTERVAL here (seconds)
RULE = {
    "alert": "PlaysStuckPending",
    "expr": f"{STUCK} > 0",
    "for": "0s",
    "labels": {"severity": "page", "service": "stripe"},
    "annotations": {
        "summary": "Plays stuck in pending at Stripe",
        "description": "Plays have been pending for over an hour",
    },
}


@pytest.fixture
def money_platform(platform_db, payment_peers):  # noqa: F811
    """The local Stripe and RabbitMQ, and the money-at-risk platform database (its
    plays reset: 5 pending over an hour) as the one PostgreSQL target."""
    reset_plays()
    Target.objects.create(name="lotolink-db", kind="postgres", url=PLATFORM_URL)
    seed_alerts()
    return payment_peers


@pytest.fixture
def alerting(asgi_server) -> Iterator[Stack]:
    """Prometheus evaluating RULE against a local gauge (set by the test), sending to
    an Alertmanager whose webhook is LotoOps' receiver (a bearer token of its own)."""
    for binary, package in ((PROMETHEUS, "prometheus"), (ALERTMANAGER, "prometheus-alertmanager")):
        if not os.path.exists(binary):
            _missing(f"this test needs {binary} (apt-get install -y {package})")
    _, token = tokens.issue("alertmanager-walk")
    stack = start_stack(f"{asgi_server.url}/hooks/alertmanager/", [token], rules=[RULE])
    yield stack
    stack.stop()


def wait_for(what: Callable[[], object], seconds: float, explain: Callable[[], str]) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up after {seconds} s\n{explain()}")


def next_interval() -> None:
    """Sleep into the beat's next sampling interval (one reading per interval)."""
    time.sleep(SAMPLE_EVERY - time.time() % SAMPLE_EVERY + 0.05)


def card_row(page, currency: str) -> str:
    return page.inner_text(f"#money-at-risk .money-totals tr[data-currency={currency}]")


def test_a_payment_alert_walks_to_verified_resolution_with_money_at_risk_live(
    login, start_worker, money_platform, alerting, responder, settings
):
    settings.RECOVERY_INTERVAL = 2.0  # the web process stores it on the verification
    settings.MONEY_AT_RISK_INTERVAL = SAMPLE_EVERY  # the beat's interval (called by hand here)
    start_worker(
        concurrency=3,
        env={KEY_ENV: API_KEY, AMQP_ENV: "guest", "LOTOOPS_PROBE_PG_DB": pg.DB},
    )

    # The alert fires: a payment incident, its procedure's diagnostics queued.
    alerting.target.metrics[STUCK] = 5
    incident = wait_for(
        lambda: Incident.objects.filter(category=Category.PAYMENT).first(), 30, alerting.logs
    )
    assert incident.title == "Plays stuck in pending at Stripe"
    assert (incident.severity.key, incident.declared_by) == ("P1", None)
    first = incident.timeline.get(kind=EventKind.ALERT)
    assert first.message.startswith("First alert triggered: PlaysStuckPending")
    diagnostics = CheckRun.objects.filter(incident=incident)
    assert diagnostics.exists()
    assert not diagnostics.filter(requested_by__isnull=False).exists()  # LotoOps queued them

    # The beat's sampler reads the money at risk: the plays stuck, to the cent.
    assert sample_money_at_risk() == 1
    page = login(responder)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")
    page.evaluate("() => { window.__notReloaded = true; }")
    assert page.get_attribute("#money-at-risk", "data-samples") == "1"
    assert page.inner_text("#money-plays-long") == "5"
    assert "35.50 USD (2)" in card_row(page, "USD")
    assert "5,000.00 DOP (1)" in card_row(page, "DOP")
    assert "700 JPY (1)" in card_row(page, "JPY") and "12.34 EUR (1)" in card_row(page, "EUR")
    time.sleep(0.3)  # the stream is subscribed

    # More plays get stuck; the next interval's reading lands; the card follows.
    add_plays([(70, "pending", 450, "USD", "banca-oeste", "processing", 11)])
    alerting.target.metrics[STUCK] = 6
    next_interval()
    assert sample_money_at_risk() == 1
    page.wait_for_selector("#money-at-risk[data-samples='2']", timeout=5000)
    assert page.inner_text("#money-plays-long") == "6"
    assert "40.00 USD (3)" in card_row(page, "USD")
    assert page.locator("#money-at-risk polyline").get_attribute("points").count(",") == 2

    # Acknowledge, mitigate, mark resolved: refused live while the plays are stuck.
    page.click("#acknowledge")
    page.wait_for_selector("#incident-status:has-text('Acknowledged')")
    page.click("#to-mitigated")
    page.wait_for_selector("#incident-status:has-text('Mitigated')")
    page.click("#incident-header button[data-status=resolved]")
    page.wait_for_selector("#recovery [data-state=failed]", timeout=30000)
    card = page.inner_text("#recovery")
    assert "Not resolved: recovery checks failed." in card
    assert "pay.pending_plays" in card and "6 plays pending over 1 hour" in card
    page.wait_for_selector("#timeline li.kind-recovery:has-text('Recovery not verified')")
    assert page.inner_text("#incident-status") == "Mitigated"
    incident.refresh_from_db()
    assert incident.status == Status.MITIGATED and incident.resolved_at is None

    # The platform pays the plays; verify again: two passing rounds, resolved, live.
    assert fix_plays() == 11  # the 6 stuck over the hour and 5 younger ones
    alerting.target.metrics[STUCK] = 0
    page.click("#recovery button.verify-recovery")
    page.wait_for_selector(
        "#timeline li.kind-recovery:has-text('Recovery checks passed (round 1 of 2)')",
        timeout=30000,
    )
    page.wait_for_selector(
        "#timeline li.kind-recovery:has-text('Recovery verified')", timeout=30000
    )
    page.wait_for_selector("#recovery [data-state=resolved]", timeout=15000)
    page.wait_for_selector("#incident-status:has-text('Resolved')", timeout=5000)
    incident.refresh_from_db()
    assert incident.status == Status.RESOLVED
    assert latest_verification(incident).state == RecoveryState.RESOLVED

    # The worker reads the money at risk at resolution; the card shows it, live.
    page.wait_for_selector("#money-at-risk[data-samples='3'] #money-at-resolution", timeout=15000)
    assert page.inner_text("#money-plays-long") == "0"
    assert "No play pending over 15 min." in page.inner_text("#money-at-risk .money-totals")
    assert page.evaluate("() => window.__notReloaded") is True
    reading = ImpactSample.objects.get(incident=incident, for_resolution=incident.resolved_at)
    assert reading.ok and reading.plays_long == 0 and reading.taken_at >= incident.resolved_at
    # The alert resolved too (the gauge is 0): on the timeline, the status unchanged.
    page.wait_for_selector("#timeline li:has-text('Alert resolved: PlaysStuckPending')")
    # The header stays in view while the page scrolls: a viewport shot, card centred.
    page.evaluate("() => document.querySelector('#money-at-risk').scrollIntoView({block: 'end'})")
    page.screenshot(path="/tmp/lotoops-walk.png")

    # The post-mortem's Impact: the peak, and the reading at resolution (0 plays).
    wait_for(
        lambda: PostMortem.objects.filter(incident=incident, version__gt=1).exists(),
        10,
        lambda: str(PostMortem.objects.filter(incident=incident).values().first()),
    )
    page.goto(f"/incidents/{incident.pk}/postmortem/")
    revenue = page.inner_text("#pm-impact .pm-text[data-field=impact_revenue]")
    assert revenue.startswith(
        "Money at risk (plays pending over 60 min): peak 5,000.00 DOP + 12.34 EUR + 700 JPY "
        "+ 40.00 USD at "
    )
    at = f"{timezone.localtime(reading.taken_at):%Y-%m-%d %H:%M %Z}"
    assert f"; nothing at resolution (read {at})." in revenue
    data = page.inner_text("#pm-impact .pm-text[data-field=impact_data]")
    assert f"; 0 at resolution (read {at})." in data and "before resolution" not in data
    page.evaluate("() => document.querySelector('#pm-impact').scrollIntoView()")
    page.screenshot(path="/tmp/lotoops-walk-postmortem.png")
