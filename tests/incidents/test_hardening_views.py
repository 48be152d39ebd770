"""Smaller holes from the security review: the action items' `next`, expired
acknowledge links, and the access a replaced commander kept."""

from __future__ import annotations

import pytest
from django.urls import reverse

from incidents import services
from incidents.access import can_view, can_work
from incidents.models import ActionItem, Category, EventKind
from incidents.paging import acklinks
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota
from tests.incidents.helpers import lived

pytestmark = pytest.mark.django_db


@pytest.fixture
def item_url(responder):
    incident = lived(responder)
    item = ActionItem.objects.create(incident=incident, text="Add an alert")
    return incident, item, reverse("incidents:action_item", args=[incident.pk, item.pk])


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "/\\evil.example/phish",
        "javascript:alert(1)",
        "foo",
        "incidents:dashboard",
    ],
)
def test_an_action_item_post_redirects_only_to_a_path_on_this_site(
    client, responder, item_url, target
):
    incident, item, url = item_url
    client.force_login(responder)
    response = client.post(url, {"status": "in_progress", "next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("incidents:postmortem", args=[incident.pk]) + (
        "#action-items"
    )
    item.refresh_from_db()
    assert item.status == "in_progress"


def test_a_same_site_next_is_followed(client, responder, item_url):
    _, _, url = item_url
    client.force_login(responder)
    response = client.post(url, {"status": "done", "next": "/action-items/?mine=1"})
    assert response["Location"] == "/action-items/?mine=1"


@pytest.fixture
def expired_link(responder, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""
    weekly_rota()
    give_contacts_addresses()
    incident = factories.declare(
        actor=responder, severity="P0", category=Category.SECURITY, title="Key leaked"
    )
    paging_tasks.page_incident(incident.pk)
    link = reverse("incidents:ack_link", args=[acklinks.ack_token(incident.notifications.first())])
    settings.ACK_LINK_MAX_AGE = -1
    return incident, link


def _expired_events(incident):
    return incident.timeline.filter(kind=EventKind.NOTIFICATION, data__ack_link="expired")


def test_an_expired_link_leaves_no_trace_for_someone_who_may_not_see_the_incident(
    client, expired_link, other_responder
):
    incident, link = expired_link
    assert not can_view(other_responder, incident)
    client.force_login(other_responder)
    for _ in range(3):
        assert client.post(link).status_code == 410
        assert client.get(link).status_code == 410
    assert not _expired_events(incident).exists()


def test_an_expired_link_is_noted_once_per_person_and_link(client, expired_link, responder):
    incident, link = expired_link
    client.force_login(responder)
    for _ in range(3):
        assert client.post(link).status_code == 410
    assert _expired_events(incident).count() == 1


def test_a_replaced_commander_loses_the_access_command_gave(responder, other_responder):
    carla = factories.UserFactory(username="carla")  # no group: access only by command
    incident = factories.declare(actor=responder, category=Category.SECURITY, commander=carla)
    assert can_view(carla, incident) and can_work(carla, incident)
    services.assign_commander(incident, other_responder, actor=responder)
    carla = type(carla).objects.get(pk=carla.pk)  # fresh permission cache
    assert not can_view(carla, incident) and not can_work(carla, incident)
    assert can_view(other_responder, incident)
    event = incident.timeline.filter(kind=EventKind.COMMANDER).last()
    assert "carla no longer has the access command gave" in event.message

    # ben, made commander (and granted) by assignment, loses it the same way.
    services.assign_commander(incident, responder, actor=responder)
    ben = type(other_responder).objects.get(pk=other_responder.pk)
    assert not can_view(ben, incident)


def test_the_declarer_keeps_their_access_when_command_moves_on(responder, other_responder):
    incident = factories.declare(actor=responder, category=Category.SECURITY, commander=responder)
    services.assign_commander(incident, other_responder, actor=responder)
    ana = type(responder).objects.get(pk=responder.pk)
    assert can_view(ana, incident) and can_work(ana, incident)
