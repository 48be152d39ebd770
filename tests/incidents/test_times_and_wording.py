"""Times with their zone: the viewer's (chosen on the profile page, default the
site's TIME_ZONE, applied by middleware, the live stream included), rota times in the
rota's zone. And the small wording: durations under a minute, category and status
labels in reports, flag labels."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.urls import reverse

from incidents import services
from incidents.models import UserProfile
from incidents.rules import escalation
from incidents.views.stream import StreamRenderer
from tests import factories
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db
PROFILE = "/profile/"


@pytest.fixture(autouse=True)
def _site_zone(settings):
    settings.TIME_ZONE = "UTC"


def choose(client, zone: str):
    return client.post(PROFILE, {"time_zone": zone})


def test_the_profile_page_offers_the_zones_and_defaults_to_the_sites(client, responder):
    client.force_login(responder)
    page = client.get(PROFILE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Times are shown in <strong>UTC</strong>" in html
    assert '<option value="" selected>The site&#x27;s time zone (UTC)</option>' in html
    assert '<option value="America/Santo_Domingo">America/Santo Domingo</option>' in html


def test_choosing_a_zone_shows_every_time_in_it_with_its_label(client, responder):
    incident = lived(responder)  # declared 2026-03-02 09:00 UTC, resolved 11:00 UTC
    client.force_login(responder)
    response = choose(client, "America/Santo_Domingo")
    assert response.status_code == 302
    assert UserProfile.objects.get(user=responder).time_zone == "America/Santo_Domingo"
    page = client.get(incident.get_absolute_url()).content.decode()
    # The timeline: 09:00 UTC is 05:00 in Santo Domingo (AST, UTC-4).
    assert "2026-03-02 05:00:00 AST" in page
    assert "2026-03-02 09:00:00" not in page
    dashboard = client.get("/").content.decode()
    assert "2026-03-02 07:00 AST" in dashboard  # resolved, in the recently resolved list
    assert f'title="Your profile (time zone)">{responder.get_username()}</a>' in dashboard
    # Back to the site's zone.
    choose(client, "")
    page = client.get(incident.get_absolute_url()).content.decode()
    assert "2026-03-02 09:00:00 UTC" in page


def test_two_viewers_each_see_their_own_zone_of_the_same_cached_timeline(
    client, responder, other_responder
):
    incident = lived(responder)
    services.set_time_zone(other_responder, "Europe/Madrid")
    client.force_login(responder)
    assert "2026-03-02 09:00:00 UTC" in client.get(incident.get_absolute_url()).content.decode()
    client.force_login(other_responder)
    page = client.get(incident.get_absolute_url()).content.decode()
    assert "2026-03-02 10:00:00 CET" in page
    assert "2026-03-02 09:00:00 UTC" not in page


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "utc ", "Europe/Madrid\x00", "9" * 70])
def test_an_unknown_zone_is_refused_and_nothing_is_saved(client, responder, bad):
    client.force_login(responder)
    response = choose(client, bad)
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not UserProfile.objects.filter(user=responder).exists()


def test_the_profile_needs_a_login(client):
    response = client.get(PROFILE)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_live_stream_renders_new_events_in_the_viewers_zone(responder, other_responder):
    """The stream outlives its request's middleware: it renders in the zone of each
    viewer, and viewers of different zones never share a drawing."""
    incident = lived(responder)
    services.set_time_zone(other_responder, "Asia/Tokyo")

    def renderer(user):
        request = RequestFactory().get(f"/incidents/{incident.pk}/stream/")
        request.user = user
        request.session = client_session()
        return StreamRenderer.open(request, user, incident.pk)

    mine, theirs = renderer(responder), renderer(other_responder)
    assert mine.key != theirs.key
    (_, _, html), *_ = mine.render_events(0)[0]
    (_, _, tokyo), *_ = theirs.render_events(0)[0]
    assert "2026-03-02 09:00:00 UTC" in html
    assert "2026-03-02 18:00:00 JST" in tokyo


def client_session():
    from importlib import import_module

    from django.conf import settings

    return import_module(settings.SESSION_ENGINE).SessionStore()


# --- wording ------------------------------------------------------------------------------


def test_an_escalation_under_a_minute_says_seconds_not_zero_minutes():
    declared = T0
    snapshot = escalation.IncidentSnapshot(
        severity="P0",
        category="payment",
        flags=frozenset(),
        declared_at=declared,
        response_deadline=declared + timedelta(seconds=40),
        acknowledged=False,
        open=True,
    )
    rules = (
        escalation.ContactRule(id=1, role="on_call", level=1, always=True),
        escalation.ContactRule(id=2, role="tech_lead", level=2),
    )
    pages = escalation.who_to_tell(
        snapshot,
        rules,
        declared + timedelta(seconds=41),
        interval=timedelta(minutes=5),
        max_steps=3,
    )
    why = next(p.why for p in pages if p.reason == "escalation-1")
    assert why == "not acknowledged 40s after declaration: escalated to level 2"
    assert "0 min" not in why


def test_reports_show_category_and_status_labels_not_keys(client, responder):
    lived(responder, category="payment", title="Stripe webhooks failing")
    client.force_login(responder)
    page = client.get(reverse("incidents:reports"), {"start": "2026-03-01", "end": "2026-03-07"})
    html = page.content.decode()
    row = html[html.index("Stripe webhooks failing") :]
    row = row[: row.index("</tr>")]
    assert "<td>Payment processing</td><td>Resolved</td>" in row
    assert "<td>payment</td>" not in row
    assert "2026-03-02 09:00 UTC" in row


def test_flag_labels_read_as_words(client, responder):
    incident = factories.declare(actor=responder, flags=["data_loss", "data_breach"])
    client.force_login(responder)
    html = client.get(incident.get_absolute_url()).content.decode()
    assert '<span class="tag flag-data_loss">Data loss</span>' in html
    assert '<span class="tag flag-data_breach">Data breach</span>' in html
    assert "Dataloss" not in html and "Databreach" not in html
