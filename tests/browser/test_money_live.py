"""The money-at-risk card of a payment incident updates live, in the browser, when
the beat's sampler stores a new reading (no reload)."""

from __future__ import annotations

import time

import pytest

from diagnostics import impact
from tests import factories
from tests.impact.platform_db import add_plays, platform, platform_db  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_money_card_updates_live_when_a_sample_lands(login, responder, platform):  # noqa: F811
    incident = factories.declare(actor=responder, title="Plays stuck in pending", severity="P2")
    impact.take_sample(incident)
    page = login(responder)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")
    page.evaluate("() => { window.__notReloaded = true; }")
    assert page.inner_text("#money-plays-long") == "5"
    assert "35.50 USD" in page.inner_text("#money-at-risk tr[data-currency=USD]")
    time.sleep(0.3)

    add_plays([(70, "pending", 450, "USD", "banca-oeste", "processing", 11)])
    from datetime import timedelta

    from django.utils import timezone

    impact.take_sample(incident, now=timezone.now() + timedelta(minutes=1))  # the next interval
    page.wait_for_selector("#money-at-risk[data-samples='2']", timeout=3000)
    assert page.inner_text("#money-plays-long") == "6"
    assert "40.00 USD" in page.inner_text("#money-at-risk tr[data-currency=USD]")
    assert page.locator("#money-at-risk polyline").get_attribute("points").count(",") == 2
    assert page.evaluate("() => window.__notReloaded") is True
