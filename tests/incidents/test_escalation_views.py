"""The escalation pages: acknowledge links (good, forged, expired, no access), the
"Who's told" card, flags, on call on the dashboard, status updates to stakeholders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import signing
from django.urls import reverse

from incidents.models import EventKind, Notification, RotaOverride, Status
from incidents.paging import acklinks
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _channels(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""


@pytest.fixture
def paged(responder):
    weekly_rota()
    give_contacts_addresses()
    incident = factories.declare(actor=responder, severity="P1")
    paging_tasks.page_incident(incident.pk)
    return incident


def link_for(incident) -> str:
    row = incident.notifications.get(role="tech_lead")
    return reverse("incidents:ack_link", args=[acklinks.ack_token(row)])


def test_an_acknowledge_link_shows_what_it_acknowledges_then_acknowledges_on_post(
    client, paged, other_responder
):
    client.force_login(other_responder)
    link = link_for(paged)
    page = client.get(link)
    assert page.status_code == 200
    assert f"Acknowledge incident #{paged.pk}".encode() in page.content
    assert b"Acknowledge as ben" in page.content
    paged.refresh_from_db()
    assert paged.status == Status.DECLARED  # a GET changes nothing
    response = client.post(link)
    assert response.status_code == 302 and response["Location"] == paged.get_absolute_url()
    paged.refresh_from_db()
    assert (paged.status, paged.acknowledged_by) == (Status.ACKNOWLEDGED, other_responder)
    assert not paged.notifications.filter(status="pending").exists()
    # The second click: a clear message, nothing else.
    again = client.post(link, follow=True)
    assert b"already acknowledged by ben" in again.content


def test_a_forged_link_is_refused_and_changes_nothing(client, paged, responder):
    client.force_login(responder)
    token = acklinks.ack_token(paged.notifications.first())
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    events = paged.timeline.count()
    for method in (client.get, client.post):
        response = method(reverse("incidents:ack_link", args=[forged]))
        assert response.status_code == 400
        assert b"This acknowledge link is not valid" in response.content
    paged.refresh_from_db()
    assert paged.status == Status.DECLARED
    assert paged.timeline.count() == events


def test_an_expired_link_is_refused_says_so_on_the_timeline_and_changes_nothing(
    client, paged, responder, settings
):
    client.force_login(responder)
    link = link_for(paged)
    settings.ACK_LINK_MAX_AGE = -1
    response = client.post(link)
    assert response.status_code == 410
    assert b"This acknowledge link has expired" in response.content
    paged.refresh_from_db()
    assert paged.status == Status.DECLARED
    last = paged.timeline.last()
    assert (last.kind, last.message) == (
        EventKind.NOTIFICATION,
        "ana used an expired acknowledge link: nothing changed",
    )


def test_a_link_from_another_salt_is_not_an_acknowledge_link(client, paged, responder):
    client.force_login(responder)
    token = signing.dumps({"i": paged.pk, "n": 1})
    assert client.get(reverse("incidents:ack_link", args=[token])).status_code == 400


def test_a_link_needs_login_and_the_right_to_work_the_incident(client, paged, viewer):
    link = link_for(paged)
    assert "/login/" in client.get(link)["Location"]
    client.force_login(viewer)
    assert client.post(link).status_code == 403
    paged.refresh_from_db()
    assert paged.status == Status.DECLARED


def test_a_link_to_a_restricted_incident_is_404_for_who_may_not_see_it(
    client, responder, other_responder
):
    give_contacts_addresses()
    secret = factories.declare(actor=responder, category="security", title="Credential leak")
    paging_tasks.page_incident(secret.pk)
    client.force_login(other_responder)
    assert client.get(link_for(secret)).status_code == 404


def test_the_incident_page_shows_whos_told_on_call_and_the_flags(client, paged, responder):
    client.force_login(responder)
    html = client.get(paged.get_absolute_url()).content.decode()
    assert 'id="whos-told"' in html
    assert "On call now: <strong>" in html
    assert "Tech lead Tess Lead" in html and "Pending" in html
    assert 'name="flags" value="data_breach"' in html


def test_the_whos_told_partial_renders_alone(client, paged):
    url = reverse("incidents:whos_told", args=[paged.pk])
    client.force_login(paged.declared_by)
    response = client.get(url, **HX)
    assert response.status_code == 200
    assert response.content.decode().lstrip().startswith('<section id="whos-told"')


def test_setting_flags_from_the_page_re_evaluates_who_is_told(
    client, paged, responder, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(paging_tasks.page_incident, "delay", lambda pk: queued.append(pk))
    client.force_login(responder)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("incidents:flags", args=[paged.pk]), {"flags": ["data_breach"]}
        )
    assert response.status_code == 302
    paged.refresh_from_db()
    assert paged.flags == ["data_breach"] and queued == [paged.pk]
    paging_tasks.page_incident(paged.pk)
    assert paged.notifications.filter(role="legal").exists()


def test_a_viewer_may_not_set_flags_and_bad_flags_are_refused(client, paged, viewer, responder):
    client.force_login(viewer)
    assert (
        client.post(
            reverse("incidents:flags", args=[paged.pk]), {"flags": ["security"]}
        ).status_code
        == 403
    )
    client.force_login(responder)
    response = client.post(reverse("incidents:flags", args=[paged.pk]), {"flags": ["aliens"]}, **HX)
    assert response.status_code == 422
    paged.refresh_from_db()
    assert paged.flags == []


def test_declaring_with_flags(client, responder, runbook):
    from incidents.models import Severity

    client.force_login(responder)
    response = client.post(
        reverse("incidents:declare"),
        {
            "title": "Customer data exposed",
            "category": "security",
            "severity": Severity.objects.get(key="P0").pk,
            "flags": ["data_breach", "regulatory"],
        },
    )
    assert response.status_code == 302
    incident = responder.declared_incidents.get()
    assert incident.flags == ["data_breach", "regulatory"]


def test_the_dashboard_shows_who_is_on_call_now_and_next(client, responder, runbook):
    rotation = weekly_rota()
    client.force_login(responder)
    html = client.get("/").content.decode()
    assert 'id="on-call"' in html
    assert "Now: <strong>" in html and "Next:" in html
    # An override shows up as such.
    omar = rotation.members.get(name="Omar")
    now = datetime.now(UTC)
    RotaOverride.objects.create(
        rotation=rotation,
        member=omar,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=1),
    )
    html = client.get("/").content.decode()
    assert 'Now: <strong>Omar</strong> <span class="tag">override</span>' in html


def test_a_status_update_from_the_page_goes_to_the_timeline_and_the_stakeholders(
    client, paged, responder, django_capture_on_commit_callbacks
):
    client.force_login(responder)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("incidents:status_update", args=[paged.pk]), {"text": "Rolled back."}, **HX
        )
    assert response.status_code == 200
    event = paged.timeline.filter(kind=EventKind.STATUS_UPDATE).get()
    assert event.data["status"] == "declared"
    assert len(callbacks) >= 1
    paging_tasks.fan_out_status_update(event.pk)
    updates = paged.notifications.filter(kind=Notification.UPDATE)
    assert set(updates.values_list("address", flat=True)) == {
        "omar@lotolink.test",
        "tess@lotolink.test",
    }
