"""Paging with a controlled clock: the right people told at declaration, escalation at
the deadline and again, stop on acknowledge, exactly once, nothing lost."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller
from django.db import connection

from incidents import services
from incidents.models import (
    EventKind,
    Incident,
    Notification,
    NotificationStatus,
    RotaOverride,
    Rotation,
)
from incidents.paging import channels, decide, outbox
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota
from tests.incidents.fake_servers import SmtpRecorder, free_port

T0 = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # a Wednesday: Omar's week on the rota
# A real SMTP exchange with a loopback server: only a channel that delivers counts as
# "sent" (Django's in-memory test backend would be "not delivered").
EMAIL = "django.core.mail.backends.smtp.EmailBackend"


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str


@pytest.fixture(scope="module")
def smtp_server():
    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield recorder, controller.port
    controller.stop()


MAILBOX: list[tuple[list[str], object]] = []


def sent_mail() -> list[Mail]:
    """What the SMTP server accepted in this test, decoded."""
    out = []
    for to, message in MAILBOX:
        body = message.get_payload(decode=True).decode(message.get_content_charset() or "utf-8")
        out.append(Mail(to, str(make_header(decode_header(message["Subject"]))), body))
    return out


@pytest.fixture(autouse=True)
def _channels(settings, smtp_server):
    recorder, port = smtp_server
    recorder.messages.clear()
    global MAILBOX
    MAILBOX = recorder.messages
    settings.EMAIL_BACKEND = EMAIL
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = ""
    settings.NOTIFY_WEBHOOK_URL = ""
    settings.ESCALATION_INTERVAL = 900
    settings.SITE_URL = "https://ops.lotolink.test"


@pytest.fixture
def contacts(runbook):
    weekly_rota()
    return give_contacts_addresses()


def declare(responder, severity="P1", **kw) -> Incident:
    incident = factories.declare(actor=responder, severity=severity, now=T0, **kw)
    decide.page(incident, now=T0)
    return incident


def pages(incident: Incident) -> set[tuple[str, str]]:
    return set(
        incident.notifications.filter(kind=Notification.PAGE).values_list("recipient", "reason")
    )


def escalation_events(incident: Incident) -> list[str]:
    return list(
        incident.timeline.filter(kind=EventKind.ESCALATION).values_list("message", flat=True)
    )


@pytest.mark.django_db
class TestDeclaration:
    def test_a_p1_tells_whoever_is_on_call_and_the_tech_lead(self, responder, contacts):
        incident = declare(responder, "P1")
        assert pages(incident) == {
            ("On-call engineer Omar", "rule"),
            ("Tech lead Tess Lead", "rule"),
        }
        assert set(incident.notifications.values_list("address", flat=True)) == {
            "omar@lotolink.test",
            "tess@lotolink.test",
        }
        assert escalation_events(incident) == [
            "Telling: On-call engineer Omar (first response) by email; "
            "Tech lead Tess Lead (P1 incident) by email"
        ]

    @pytest.mark.parametrize(
        ("severity", "flags", "roles"),
        [
            ("P0", [], {"on_call", "tech_lead", "engineering_manager"}),
            ("P2", [], {"on_call"}),
            ("P3", ["data_breach"], {"on_call", "legal"}),
            ("P2", ["data_loss"], {"on_call", "cto"}),
            ("P2", ["regulatory", "security"], {"on_call", "legal", "cto"}),
        ],
    )
    def test_each_severity_and_flag_tells_its_roles(
        self, responder, contacts, severity, flags, roles
    ):
        incident = declare(responder, severity, flags=flags)
        assert set(incident.notifications.values_list("role", flat=True)) == roles

    def test_an_override_pages_the_swapped_in_engineer(self, responder, contacts):
        rotation = Rotation.objects.get()
        olga = rotation.members.get(name="Olga")
        RotaOverride.objects.create(
            rotation=rotation,
            member=olga,
            starts_at=T0 - timedelta(hours=1),
            ends_at=T0 + timedelta(hours=5),
            reason="swap with Omar",
        )
        incident = declare(responder, "P2")
        assert pages(incident) == {("On-call engineer Olga", "rule")}

    def test_placeholder_contacts_are_recorded_as_no_address_and_nothing_crashes(self, responder):
        incident = declare(responder, "P1")  # seeded contacts, no rota, no addresses
        rows = incident.notifications.all()
        assert {r.status for r in rows} == {NotificationStatus.NO_ADDRESS}
        assert "no address for email" in escalation_events(incident)[0]
        assert outbox.deliver(rows[0].pk) == ("not pending", None)

    def test_the_paging_task_run_twice_makes_each_page_once(self, responder, contacts):
        incident = factories.declare(actor=responder, severity="P0")
        assert paging_tasks.page_incident(incident.pk) == 3
        assert paging_tasks.page_incident(incident.pk) == 0
        assert incident.notifications.count() == 3
        assert len(escalation_events(incident)) == 1

    def test_declaring_pages_once_the_declaration_commits(
        self, responder, contacts, django_capture_on_commit_callbacks, monkeypatch
    ):
        sent = []
        monkeypatch.setattr(paging_tasks.page_incident, "delay", lambda pk: sent.append(pk))
        with django_capture_on_commit_callbacks(execute=True):
            incident = factories.declare(actor=responder)
        assert sent == [incident.pk]

    def test_a_broker_outage_never_fails_the_declaration(
        self, responder, contacts, django_capture_on_commit_callbacks, monkeypatch
    ):
        def down(pk):
            raise ConnectionError("broker down")

        monkeypatch.setattr(paging_tasks.page_incident, "delay", down)
        with django_capture_on_commit_callbacks(execute=True):
            incident = factories.declare(actor=responder)
        assert Incident.objects.filter(pk=incident.pk).exists()
        # The beat finds the incident nobody was told about and tells them.
        assert len(decide.escalate_due()) == 2

    def test_setting_a_flag_later_tells_whoever_it_calls_for(self, responder, contacts):
        incident = factories.declare(actor=responder, severity="P2")  # declared now
        paging_tasks.page_incident(incident.pk)
        services.set_incident_flags(incident, ["data_breach"], actor=responder)
        assert incident.data_breach
        paging_tasks.page_incident(incident.pk)
        assert ("Legal/Compliance Lex Legal", "rule") in pages(incident)
        assert services.set_incident_flags(incident, ["data_breach"], actor=responder) is None

    def test_unknown_flags_are_refused(self, responder, contacts):
        incident = declare(responder, "P2")
        with pytest.raises(services.IncidentError):
            services.set_incident_flags(incident, ["aliens"], actor=responder)

    def test_raising_the_severity_tells_the_new_levels(self, responder, contacts):
        from incidents.models import Severity

        incident = factories.declare(actor=responder, severity="P2")  # declared now
        paging_tasks.page_incident(incident.pk)
        services.change_severity(
            incident, Severity.objects.get(key="P0"), actor=responder, reason="payments down"
        )
        paging_tasks.page_incident(incident.pk)
        assert {r for _, r in pages(incident)} == {"rule"}
        assert {"tech_lead", "engineering_manager"} <= set(
            incident.notifications.values_list("role", flat=True)
        )


@pytest.mark.django_db
class TestEscalation:
    def test_past_the_deadline_it_escalates_one_level_then_again_then_stops_on_acknowledge(
        self, responder, other_responder, contacts
    ):
        incident = declare(responder, "P1")  # deadline T0 + 30 min, steps every 15 min
        deadline = incident.response_deadline
        assert decide.escalate_due(deadline - timedelta(seconds=1)) == []
        assert len(decide.escalate_due(deadline)) == 1
        assert ("Engineering manager Manu Manager", "escalation-1") in pages(incident)
        assert decide.escalate_due(deadline + timedelta(minutes=5)) == []  # same step: nothing
        decide.escalate_due(deadline + timedelta(minutes=15))
        assert ("CTO Cleo CTO", "escalation-2") in pages(incident)
        assert escalation_events(incident)[-1].startswith("Escalating: CTO Cleo CTO")

        services.acknowledge_incident(
            incident, actor=other_responder, now=deadline + timedelta(minutes=16)
        )
        assert not incident.notifications.filter(status=NotificationStatus.PENDING).exists()
        assert escalation_events(incident)[-1] == "Escalation stopped: 4 pending pages cancelled"
        before = incident.notifications.count()
        assert decide.escalate_due(deadline + timedelta(hours=1)) == []
        assert incident.notifications.count() == before

    def test_acknowledging_cancels_pending_pages_before_they_are_sent(self, responder, contacts):
        incident = declare(responder, "P1")
        ids = list(incident.notifications.values_list("pk", flat=True))
        services.acknowledge_incident(incident, actor=responder)
        assert [outbox.deliver(pk)[0] for pk in ids] == ["not pending", "not pending"]
        assert sent_mail() == []

    def test_a_beat_that_was_down_catches_up_on_every_due_step(self, responder, contacts):
        incident = declare(responder, "P1")
        decide.escalate_due(incident.response_deadline + timedelta(minutes=31))
        reasons = {r for _, r in pages(incident)}
        assert {"escalation-1", "escalation-2", "escalation-3"} <= reasons


@pytest.mark.django_db
class TestDelivery:
    def test_a_page_is_sent_once_with_a_signed_acknowledge_link(self, responder, contacts):
        incident = declare(responder, "P1")
        tess = incident.notifications.get(role="tech_lead")
        assert outbox.deliver(tess.pk) == ("sent", None)
        assert outbox.deliver(tess.pk) == ("not pending", None)
        assert len(sent_mail()) == 1
        email = sent_mail()[0]
        assert email.to == ["tess@lotolink.test"]
        assert email.subject == f"[P1] Incident #{incident.pk}: Payment webhooks failing"
        assert "Status: Declared" in email.body
        assert "https://ops.lotolink.test/ack/" in email.body
        tess.refresh_from_db()
        assert (tess.status, tess.attempts) == (NotificationStatus.SENT, 1)
        event = incident.timeline.filter(kind=EventKind.NOTIFICATION).get()
        assert event.message == (
            "Page to Tech lead Tess Lead sent by email: emailed tess@lotolink.test"
        )

    def test_a_transient_failure_retries_with_backoff_and_says_so(
        self, responder, contacts, monkeypatch
    ):
        incident = declare(responder, "P1")
        row = incident.notifications.get(role="tech_lead")

        def refused(self, message, address):
            raise channels.DeliveryError("SMTP unreachable: ConnectionRefusedError")

        monkeypatch.setattr(channels.EmailChannel, "send", refused)
        assert outbox.deliver(row.pk) == ("retrying", 10)
        row.refresh_from_db()
        assert row.status == NotificationStatus.PENDING
        assert outbox.deliver(row.pk) == ("not pending", None)  # not due yet
        for _ in range(3):
            outbox.deliver(row.pk, now=row.due_at)
            row.refresh_from_db()
        assert (row.status, row.attempts) == (NotificationStatus.FAILED, 4)
        messages = list(
            incident.timeline.filter(kind=EventKind.NOTIFICATION).values_list("message", flat=True)
        )
        assert messages[0].endswith("retrying in 10 s (attempt 1 of 4)")
        assert messages[-1] == (
            "Page to Tech lead Tess Lead by email failed: SMTP unreachable: ConnectionRefusedError"
        )

    def test_a_failing_channel_does_not_block_the_others(self, responder, contacts, monkeypatch):
        incident = declare(responder, "P1")

        def broken(self, message, address):
            if address.startswith("omar"):
                raise RuntimeError("bug")
            return "ok"

        monkeypatch.setattr(channels.EmailChannel, "send", broken)
        outcomes = sorted(
            outbox.deliver(pk)[0] for pk in incident.notifications.values_list("pk", flat=True)
        )
        assert outcomes == ["failed", "sent"]

    def test_a_notification_whose_worker_died_mid_send_is_sent_again(
        self, responder, contacts, settings
    ):
        incident = declare(responder, "P1")
        row = incident.notifications.get(role="tech_lead")
        assert outbox.claim(row.pk, T0)  # the worker took it ... and died
        assert outbox.deliver(row.pk) == ("not pending", None)
        assert row.pk not in outbox.requeue_stale(T0 + timedelta(seconds=60))  # within the lease
        requeued = outbox.requeue_stale(T0 + timedelta(seconds=settings.NOTIFY_SEND_LEASE + 1))
        assert row.pk in requeued
        assert outbox.deliver(row.pk) == ("sent", None)
        row.refresh_from_db()
        assert row.attempts == 2
        assert (
            "the worker was lost while sending"
            in incident.timeline.filter(kind=EventKind.NOTIFICATION).first().message
        )

    def test_status_updates_go_to_everyone_told_with_the_current_state(
        self, responder, contacts, django_capture_on_commit_callbacks, monkeypatch
    ):
        incident = declare(responder, "P1")
        services.acknowledge_incident(incident, actor=responder)
        queued = []
        monkeypatch.setattr(
            paging_tasks.fan_out_status_update, "delay", lambda pk: queued.append(pk)
        )
        with django_capture_on_commit_callbacks(execute=True):
            event = services.post_status_update(
                incident, "Stripe retried; watching.", actor=responder
            )
        assert queued == [event.pk]
        assert paging_tasks.fan_out_status_update(event.pk) == 2
        assert paging_tasks.fan_out_status_update(event.pk) == 0
        for row in incident.notifications.filter(kind=Notification.UPDATE):
            assert outbox.deliver(row.pk)[0] == "sent"
        bodies = {m.to[0]: m for m in sent_mail()}
        assert set(bodies) == {"omar@lotolink.test", "tess@lotolink.test"}
        update = bodies["tess@lotolink.test"]
        assert update.subject == "[P1 · Acknowledged] Update: Payment webhooks failing"
        assert "Stripe retried; watching." in update.body
        assert "Status: Acknowledged" in update.body
        assert "/ack/" not in update.body


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def run_together(self, target, *args):
        barrier = threading.Barrier(2)
        results, errors = [], []

        def run():
            try:
                barrier.wait(timeout=5)
                results.append(target(*args))
            except Exception as exc:  # surfaced by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert errors == []
        return results

    def test_two_escalation_runs_at_once_page_each_person_once(
        self, responder, contacts, monkeypatch
    ):
        monkeypatch.setattr(outbox, "enqueue", lambda ids: None)
        for attempt in range(3):
            incident = factories.declare(
                actor=responder, severity="P1", title=f"Race {attempt}", now=T0
            )
            results = self.run_together(decide.escalate_due, incident.response_deadline)
            # rule pages for on-call and tech lead, escalation-1 for the manager
            assert sorted(len(r) for r in results)[-1] >= 3
            keys = list(incident.notifications.values_list("recipient_key", "channel", "reason"))
            assert len(keys) == len(set(keys)) == 3
            assert len(escalation_events(incident)) == 1

    def test_two_workers_delivering_the_same_page_send_it_once(self, responder, contacts):
        incident = declare(responder, "P1")
        row = incident.notifications.get(role="tech_lead")
        results = self.run_together(lambda: outbox.deliver(row.pk)[0])
        assert sorted(results) == ["not pending", "sent"]
        assert len(sent_mail()) == 1
