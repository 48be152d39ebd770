"""A responder marks a payment incident resolved in the browser while plays are stuck:
a real worker runs the recovery checks against the local peers, the refusal and its
evidence appear live beside the button; once the plays are fixed, "Verify again" runs
them twice and the incident resolves, live."""

from __future__ import annotations

import pytest

from diagnostics.models import RecoveryState
from diagnostics.recovery import latest_verification
from incidents import services
from incidents.models import Category, Status
from tests import factories
from tests.diagnostics import pg_helpers as pg
from tests.diagnostics.test_probes_rabbitmq import SECRET_ENV as AMQP_ENV
from tests.diagnostics.test_probes_stripe import API_KEY, KEY_ENV
from tests.diagnostics.test_recovery import (  # noqa: F401  (fixtures)
    fix_the_plays,
    payment_peers,
    platform,
    plays,
    queues,
    stripe_peer_server,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def test_a_payment_incident_walks_to_verified_resolution(
    login,
    start_worker,
    platform,  # noqa: F811
    responder,
    settings,
):
    settings.RECOVERY_INTERVAL = 2.0  # the web process stores it on the verification
    start_worker(
        concurrency=3,
        env={KEY_ENV: API_KEY, AMQP_ENV: "guest", "LOTOOPS_PROBE_PG_DB": pg.DB},
    )
    incident = factories.declare(actor=responder, category=Category.PAYMENT, severity="P2")
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.MITIGATED, actor=responder)

    page = login(responder)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")
    page.evaluate("() => { window.__notReloaded = true; }")
    page.click("#incident-header button[data-status=resolved]")

    # The checks run in the worker; the refusal and its evidence arrive live.
    page.wait_for_selector("#recovery [data-state=failed]", timeout=30000)
    card = page.inner_text("#recovery")
    assert "Not resolved: recovery checks failed." in card
    assert "pay.pending_plays" in card and "3 plays pending over 1 hour" in card
    page.wait_for_selector("#timeline li.kind-recovery:has-text('Recovery not verified')")
    incident.refresh_from_db()
    assert incident.status == Status.MITIGATED

    fix_the_plays()
    page.click("#recovery button.verify-recovery")
    page.wait_for_selector(
        "#timeline li.kind-recovery:has-text('Recovery checks passed (round 1 of 2)')",
        timeout=30000,
    )
    page.wait_for_selector(
        "#timeline li.kind-recovery:has-text('Recovery verified')", timeout=60000
    )
    page.wait_for_selector("#recovery [data-state=resolved]", timeout=15000)
    assert page.evaluate("() => window.__notReloaded") is True
    incident.refresh_from_db()
    assert incident.status == Status.RESOLVED
    assert latest_verification(incident).state == RecoveryState.RESOLVED
    page.screenshot(path="/tmp/lotoops-recovery-browser.png", full_page=True)
