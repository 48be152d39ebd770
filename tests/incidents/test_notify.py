"""Channels against real local servers: SMTP (aiosmtpd), Slack's Web API and a webhook
receiver on loopback. The exact requests are checked; failures land on the timeline."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from incidents.models import EventKind, Notification, NotificationStatus
from incidents.paging import channels, outbox
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota
from tests.incidents.fake_servers import HttpRecorder, SmtpRecorder, free_port, start_http

pytestmark = pytest.mark.django_db
SECRET = "test-webhook-secret"


@pytest.fixture
def smtp(settings):
    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_TIMEOUT = 5
    settings.SITE_URL = "https://ops.lotolink.test"
    yield recorder
    controller.stop()


@pytest.fixture
def remote(settings):
    recorder = HttpRecorder()
    server, url = start_http(recorder)
    settings.SLACK_BOT_TOKEN = "xoxb-test-token"
    settings.SLACK_API_URL = f"{url}/slack/api"
    settings.SLACK_WEBHOOK_URL = ""
    settings.NOTIFY_WEBHOOK_URL = f"{url}/hook"
    settings.NOTIFY_WEBHOOK_SECRET = SECRET
    settings.NOTIFY_TIMEOUT = 5
    settings.SITE_URL = "https://ops.lotolink.test"
    yield recorder
    server.shutdown()
    server.server_close()


@pytest.fixture
def paged(responder, runbook):
    weekly_rota()
    give_contacts_addresses()
    incident = factories.declare(actor=responder, severity="P1", title="Payments DOWN!!")
    paging_tasks.page_incident(incident.pk)
    return incident


def rows(incident, **filters):
    return list(incident.notifications.filter(**filters).order_by("pk"))


def notification_events(incident):
    return list(
        incident.timeline.filter(kind=EventKind.NOTIFICATION).values_list("message", flat=True)
    )


def test_email_reaches_a_real_smtp_server(smtp, paged, settings):
    settings.SLACK_BOT_TOKEN = settings.NOTIFY_WEBHOOK_URL = ""
    tess = paged.notifications.get(role="tech_lead", channel="email")
    assert outbox.deliver(tess.pk) == ("sent", None)
    [(to, message)] = smtp.messages
    assert to == ["tess@lotolink.test"]
    assert message["Subject"] == f"[P1] Incident #{paged.pk}: Payments DOWN!!"
    body = message.get_payload()
    assert "You are told as Tech lead (P1 incident)." in body
    assert "Acknowledge: https://ops.lotolink.test/ack/" in body


def test_a_refused_recipient_fails_at_once_and_says_so(smtp, paged):
    tess = paged.notifications.get(role="tech_lead", channel="email")
    Notification.objects.filter(pk=tess.pk).update(address="refused@lotolink.test")
    assert outbox.deliver(tess.pk) == ("failed", None)
    tess.refresh_from_db()
    assert tess.status == NotificationStatus.FAILED
    assert notification_events(paged) == [
        "Page to Tech lead Tess Lead by email failed: SMTP refused refused@lotolink.test"
    ]


def test_an_smtp_server_that_is_down_is_retried(settings, paged):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    tess = paged.notifications.get(role="tech_lead", channel="email")
    assert outbox.deliver(tess.pk) == ("retrying", 10)
    assert "ConnectionRefusedError" in notification_events(paged)[0]


def test_slack_opens_the_incident_channel_invites_and_posts_the_initial_update(remote, responder):
    weekly_rota()
    give_contacts_addresses()
    now = timezone.now()
    incident = factories.declare(actor=responder, severity="P1", title="Payments DOWN!!", now=now)
    paging_tasks.page_incident(incident.pk)
    channel_row = incident.notifications.get(kind=Notification.CHANNEL)
    assert outbox.deliver(channel_row.pk) == ("sent", None)
    calls = [(r["path"].rsplit("/", 1)[1], r["json"]) for r in remote.requests]
    name = f"incident-{now:%Y-%m-%d}-payments-down"
    assert calls[0] == ("conversations.create", {"name": name})
    assert calls[1][0] == "conversations.invite"
    assert set(calls[1][1]["users"].split(",")) == {"UOMAR", "UTESS"}
    assert calls[2][0] == "chat.postMessage"
    assert calls[2][1]["channel"] == "C0INCIDENT"
    assert calls[2][1]["text"].startswith("Initial status update.\nP1 payment processing incident")
    assert all(r["headers"]["Authorization"] == "Bearer xoxb-test-token" for r in remote.requests)
    assert notification_events(incident)[-1] == (
        f"Incident channel #{name} sent by slack: created #{name}, invited 2, "
        "posted the initial status update"
    )


def test_slack_direct_messages_go_to_the_contacts_user_id(remote, paged):
    tess = paged.notifications.get(role="tech_lead", channel="slack")
    remote.known_channels.add("UTESS")
    assert outbox.deliver(tess.pk) == ("sent", None)
    [request] = remote.requests
    assert request["json"]["channel"] == "UTESS"
    assert "/ack/" in request["json"]["text"]


def test_an_unknown_slack_channel_fails_with_slacks_reason_and_changes_nothing_else(remote, paged):
    update = Notification.objects.create(
        incident=paged,
        recipient_key="channel",
        recipient=paged.channel_name,
        channel="slack",
        address=paged.channel_name,
        reason="update-x",
        kind=Notification.UPDATE,
        subject="s",
        text="Still down.",
    )
    assert outbox.deliver(update.pk) == ("failed", None)
    assert notification_events(paged)[-1] == (
        f"Status update to {paged.channel_name} by slack failed: "
        "Slack chat.postMessage: channel_not_found"
    )
    paged.refresh_from_db()
    assert paged.status == "declared"


def test_the_webhook_is_signed_with_hmac_sha256_and_a_timestamp(remote, paged):
    tess = paged.notifications.get(role="tech_lead", channel="webhook")
    assert outbox.deliver(tess.pk) == ("sent", None)
    [request] = remote.requests
    timestamp = request["headers"]["X-LotoOps-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + request["raw"], hashlib.sha256
    ).hexdigest()
    assert request["headers"]["X-LotoOps-Signature"] == f"sha256={expected}"
    assert abs(int(timestamp) - time.time()) < 30
    assert channels.verify(SECRET, timestamp, request["raw"], f"sha256={expected}", now=time.time())
    assert not channels.verify(
        "wrong", timestamp, request["raw"], f"sha256={expected}", now=time.time()
    )
    assert not channels.verify(
        SECRET, timestamp, request["raw"], f"sha256={expected}", now=time.time() + 3600
    )
    body = request["json"]
    assert body["type"] == "page"
    assert body["incident"] == paged.pk
    assert body["recipient"] == {"name": "Tech lead Tess Lead", "role": "tech_lead"}
    assert body["ack_url"].startswith("https://ops.lotolink.test/ack/")


def test_a_webhook_answering_500_is_retried_and_the_timeline_says_so(remote, paged):
    remote.webhook_status = 500
    tess = paged.notifications.get(role="tech_lead", channel="webhook")
    assert outbox.deliver(tess.pk) == ("retrying", 10)
    assert notification_events(paged) == [
        "Page to Tech lead Tess Lead by webhook failed (webhook answered HTTP 500): "
        "retrying in 10 s (attempt 1 of 4)"
    ]
    remote.webhook_status = 200
    tess.refresh_from_db()
    assert outbox.deliver(tess.pk, now=tess.due_at) == ("sent", None)


def test_the_slack_incoming_webhook_is_the_fallback_without_a_bot_token(remote, settings, paged):
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL
    channel_row = paged.notifications.get(kind=Notification.CHANNEL)
    assert outbox.deliver(channel_row.pk) == ("sent", None)
    [request] = remote.requests
    assert request["path"] == "/hook"
    assert request["json"]["text"].startswith(f"{paged.channel_name}: Initial status update.\nP1")


def test_a_signed_timestamp_is_checked_against_replays():
    body = b"{}"
    signature = channels.sign(SECRET, "1000", body)
    assert channels.verify(SECRET, "1000", body, signature, now=1100)
    assert not channels.verify(SECRET, "1000", body, signature, now=2000)
    assert not channels.verify(SECRET, "nope", body, signature, now=1000)
    assert datetime.now(UTC)  # keep the import honest
