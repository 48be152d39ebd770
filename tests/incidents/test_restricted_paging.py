"""A restricted incident is never broadcast: its Slack channel is private and named
without its title, pages, webhook posts, status updates and reminders say only
"Restricted incident #N (P0 security): open LotoOps to see it". Paging never grants
access: only people who may already see it are paged (their acknowledge link works);
the others are not told, and the timeline and the "Who's told" card say who and why.
Asserted on the exact requests the local Slack, webhook and SMTP stand-ins receive."""

from __future__ import annotations

import json

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from incidents import services
from incidents.access import can_view
from incidents.models import (
    EscalationContact,
    EscalationRole,
    EventKind,
    Notification,
    NotificationStatus,
)
from incidents.paging import outbox
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota
from tests.incidents.fake_servers import HttpRecorder, SmtpRecorder, free_port, start_http

pytestmark = pytest.mark.django_db
TITLE = "Card numbers exfiltrated through the admin export"
SUMMARY = "Attacker used a stolen support token to dump the cards table"
UPDATE = "Revoked the support token of agent 4411; cards table dump confirmed"
SECRET_WORDS = ("exfiltrated", "Card numbers", "stolen support token", "agent 4411", "cards")


@pytest.fixture
def outside(settings):
    """Slack's Web API, the webhook receiver and an SMTP server, all on loopback."""
    recorder = HttpRecorder()
    server, url = start_http(recorder)
    smtp = SmtpRecorder()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.SLACK_BOT_TOKEN = "xoxb-test-token"
    settings.SLACK_API_URL = f"{url}/slack/api"
    settings.SLACK_WEBHOOK_URL = ""
    settings.NOTIFY_WEBHOOK_URL = f"{url}/hook"
    settings.NOTIFY_WEBHOOK_SECRET = "test-webhook-secret"
    settings.NOTIFY_TIMEOUT = 5
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = (
        "127.0.0.1",
        controller.port,
        5,
    )
    settings.SITE_URL = "https://ops.lotolink.test"
    recorder.smtp = smtp
    yield recorder
    controller.stop()
    server.shutdown()
    server.server_close()


@pytest.fixture
def uncleared_tess(runbook):
    """The tech lead behind the seeded contact: a responder, not granted this incident."""
    user = factories.UserFactory(
        username="tess", first_name="Tess", last_name="Lead", email="tess@lotolink.test"
    )
    user.groups.add(Group.objects.get(name="Responders"))
    weekly_rota()
    give_contacts_addresses()
    EscalationContact.objects.filter(role=EscalationRole.TECH_LEAD).update(user=user)
    return user


@pytest.fixture
def tess(uncleared_tess):
    """The same tech lead, cleared for every restricted incident (a superuser's grant of
    `incidents.view_restricted_incident`): the person a security page may reach."""
    uncleared_tess.user_permissions.add(Permission.objects.get(codename="view_restricted_incident"))
    return type(uncleared_tess).objects.get(pk=uncleared_tess.pk)


def deliver_all(incident) -> None:
    pending = incident.notifications.filter(status=NotificationStatus.PENDING).order_by("pk")
    for pk in pending.values_list("pk", flat=True):
        outbox.deliver(pk)


def everything_sent(outside) -> str:
    http = [r["raw"].decode() for r in outside.requests]
    mail = [f"{m['Subject']}\n{m.get_payload()}" for _, m in outside.smtp.messages]
    return "\n".join(http + mail)


def declare_breach(responder, now=None):
    incident = factories.declare(
        actor=responder,
        severity="P0",
        category="security",
        title=TITLE,
        summary=SUMMARY,
        now=now or timezone.now(),
    )
    assert incident.restricted
    paging_tasks.page_incident(incident.pk)
    return incident


def test_a_restricted_incident_opens_a_private_channel_without_its_title(outside, responder, tess):
    now = timezone.now()
    incident = declare_breach(responder, now)
    assert incident.channel_name.startswith(f"#incident-{now:%Y-%m-%d}-restricted-")
    channel_row = incident.notifications.get(kind=Notification.CHANNEL)
    assert outbox.deliver(channel_row.pk) == ("sent", None)
    create = outside.requests[0]
    assert create["path"] == "/slack/api/conversations.create"
    assert create["json"] == {"name": incident.channel_name.lstrip("#"), "is_private": True}
    post = next(r for r in outside.requests if r["path"].endswith("chat.postMessage"))
    assert post["json"]["text"] == (
        "Initial status update.\n"
        f"Restricted incident #{incident.pk} (P0 security): open LotoOps to see it\n"
        "Status: Declared\n"
        f"Open: https://ops.lotolink.test/incidents/{incident.pk}/"
    )


def test_pages_and_the_webhook_carry_no_title_or_summary(outside, responder, tess):
    incident = declare_breach(responder)
    deliver_all(incident)
    line = f"Restricted incident #{incident.pk} (P0 security): open LotoOps to see it"
    hooks = [r["json"] for r in outside.requests if r["path"] == "/hook"]
    assert hooks and all(h["subject"] == f"[P0] {line}" for h in hooks)
    assert all(line in h["text"] and h["channel"] == "" for h in hooks)
    assert outside.smtp.messages
    assert {m["Subject"] for _, m in outside.smtp.messages} == {f"[P0] {line}"}
    sent = everything_sent(outside)
    for words in SECRET_WORDS:
        assert words.lower() not in sent.lower(), words


def test_status_updates_about_it_stay_in_lotoops(outside, responder, tess):
    incident = declare_breach(responder)
    deliver_all(incident)
    outside.requests.clear()
    outside.smtp.messages.clear()
    event = services.post_status_update(incident, UPDATE, actor=responder)
    paging_tasks.fan_out_status_update(event.pk)
    deliver_all(incident)
    texts = [r["json"].get("text", "") for r in outside.requests]
    assert len(outside.requests) >= 2 and outside.smtp.messages  # Slack, webhook, email
    assert all(
        text.startswith(
            f"Status update on restricted incident #{incident.pk} by ana: open LotoOps to read it."
        )
        for text in texts
    )
    sent = everything_sent(outside)
    for words in SECRET_WORDS:
        assert words.lower() not in sent.lower(), words


def test_paging_grants_no_access_and_who_may_not_see_it_is_not_told(
    outside, client, responder, uncleared_tess
):
    """Issue 20, hole 1: being paged used to grant view access to a restricted incident
    (and so anyone who could edit a contact's person could read it)."""
    tess = uncleared_tess
    incident = factories.declare(
        actor=responder, severity="P0", category="security", title=TITLE, summary=SUMMARY
    )
    paging_tasks.page_incident(incident.pk)
    deliver_all(incident)
    assert not can_view(type(tess).objects.get(pk=tess.pk), incident)
    assert not incident.timeline.filter(data__granted="view_incident").exists()
    rows = incident.notifications.filter(role=EscalationRole.TECH_LEAD, kind=Notification.PAGE)
    assert rows and {r.status for r in rows} == {NotificationStatus.WITHHELD}
    assert not [m for _, m in outside.smtp.messages if "tess@lotolink.test" in m["To"]]
    # The on-call rota's people have no LotoOps user: nobody can tell they may see it.
    on_call = incident.notifications.filter(role=EscalationRole.ON_CALL, kind=Notification.PAGE)
    assert on_call and {r.status for r in on_call} == {NotificationStatus.WITHHELD}
    told = incident.timeline.get(kind=EventKind.ESCALATION, message__startswith="Telling")
    assert "Tess Lead may not see this restricted incident" in told.message
    assert "no LotoOps user behind this contact" in told.message
    client.force_login(tess)
    assert client.get(incident.get_absolute_url()).status_code == 404
    client.force_login(responder)  # the declarer, who sees it, reads who was not told
    card = client.get(f"/incidents/{incident.pk}/told/").content.decode()
    assert "Not told" in card and "Tess Lead may not see this restricted incident" in card


def test_someone_who_may_see_it_is_paged_and_their_acknowledge_link_works(
    outside, client, responder, tess
):
    incident = factories.declare(
        actor=responder, severity="P0", category="security", title=TITLE, summary=SUMMARY
    )
    paging_tasks.page_incident(incident.pk)
    assert not incident.timeline.filter(data__granted="view_incident").exists()
    page = incident.notifications.get(role=EscalationRole.TECH_LEAD, channel="webhook")
    assert page.status == NotificationStatus.PENDING
    assert outbox.deliver(page.pk) == ("sent", None)
    ack_url = json.loads(outside.requests[-1]["raw"])["ack_url"]
    path = ack_url.removeprefix("https://ops.lotolink.test")
    client.force_login(tess)
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 302
    incident.refresh_from_db()
    assert incident.acknowledged_by == tess


def test_a_reminder_about_it_names_no_task_or_title(outside, responder, tess):
    incident = declare_breach(responder)
    deliver_all(incident)
    outside.requests.clear()
    outside.smtp.messages.clear()
    item = incident.checklist.first()
    rows = outbox.remind(item, now=timezone.now())
    for pk in rows:
        outbox.deliver(pk)
    assert outside.requests
    sent = everything_sent(outside)
    assert item.text.lower() not in sent.lower()
    for words in SECRET_WORDS:
        assert words.lower() not in sent.lower(), words


def test_pages_written_before_it_became_restricted_go_out_without_its_title(
    outside, responder, tess
):
    incident = factories.declare(
        actor=responder,
        severity="P0",
        category="security",
        title=TITLE,
        summary=SUMMARY,
        restricted=False,
    )
    paging_tasks.page_incident(incident.pk)
    type(incident).objects.filter(pk=incident.pk).update(restricted=True)
    pages = incident.notifications.filter(kind=Notification.PAGE, channel__in=["webhook", "email"])
    for pk in pages.values_list("pk", flat=True):
        assert outbox.deliver(pk) == ("sent", None)
    assert outside.requests and outside.smtp.messages
    sent = everything_sent(outside)
    for words in SECRET_WORDS:
        assert words.lower() not in sent.lower(), words
    assert f"Restricted incident #{incident.pk} (P0 security): open LotoOps to see it" in sent
