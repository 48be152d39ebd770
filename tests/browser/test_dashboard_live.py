"""An open dashboard shows an incident declared elsewhere within a second or two,
without a reload, and never one its viewer may not see."""

from __future__ import annotations

import time

import pytest

from incidents import services
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_open_dashboard_shows_a_new_incident_live(login, responder, other_responder):
    factories.declare(actor=other_responder, title="Already open")
    page = login(responder)
    page.wait_for_selector("#incident-list:has-text('Already open')")
    # The stream is connected (htmx's SSE extension keeps it on the element).
    page.wait_for_function(
        "() => { const s = document.querySelector('#dashboard-live')?.['htmx-internal-data']"
        "?.sseEventSource; return s && s.readyState === 1; }"
    )
    page.evaluate("() => { window.__notReloaded = true; }")

    # Another responder declares a restricted (security) incident, then a payment one.
    secret = factories.declare(actor=other_responder, category="security", title="Token leak")
    assert secret.restricted
    time.sleep(1.2)  # a separate "changed" for each
    declared = time.monotonic()
    incident = factories.declare(actor=other_responder, title="Banca norte timing out")
    page.wait_for_selector(f"#incident-list a[href='/incidents/{incident.pk}/']", timeout=3000)
    shown = time.monotonic() - declared
    assert shown < 2.5, shown  # at most one second of coalescing, plus the list's fetch
    assert "Token leak" not in page.inner_text("#incident-list")
    assert page.evaluate("() => window.__notReloaded") is True

    # A status change elsewhere redraws the row too.
    services.acknowledge_incident(incident, actor=other_responder)
    row = f"#incident-list tr:has(a[href='/incidents/{incident.pk}/'])"
    page.wait_for_selector(f"{row}:has-text('Acknowledged')", timeout=3000)
    page.screenshot(path="/tmp/lotoops-dashboard-live.png", full_page=True)
