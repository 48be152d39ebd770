"""Regulatory clocks with a controlled clock: the data-breach and regulatory flags
start their deadline, the header shows it beside the SLA clock, Legal/Compliance is
reminded and escalated to exactly once per step (even with two beats at once),
recording the notification stops it (audited), and the exports list it."""

from __future__ import annotations

import csv
import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from incidents import services
from incidents.models import EventKind, Notification, NotificationStatus, RegulatoryClock
from incidents.paging import outbox, regulatory
from incidents.reporting import exports
from incidents.reporting import figures as report_figures
from incidents.rules import regulatory as rule
from incidents.services import IncidentError
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota

T0 = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _channels(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""
    settings.ESCALATION_INTERVAL = 900
    settings.ESCALATION_MAX_STEPS = 3
    settings.REGULATORY_CLOCKS = {
        "data_breach": ("Notify the data-protection authority", 72, 24),
        "regulatory": ("Notify the gaming regulator", 48, 12),
    }


@pytest.fixture
def contacts(runbook):
    weekly_rota()
    return give_contacts_addresses()


@pytest.fixture
def frozen(monkeypatch):
    """Django's clock, moved by the test."""
    now = {"t": T0}
    monkeypatch.setattr(timezone, "now", lambda: now["t"])
    return now


def breach(responder, category="security", **kw):
    return factories.declare(
        actor=responder, category=category, flags=["data_breach"], now=T0, **kw
    )


def regulatory_rows(incident):
    return sorted(
        incident.notifications.filter(kind=Notification.REGULATORY).values_list(
            "recipient", "channel", "reason"
        )
    )


# --- the pure rule ------------------------------------------------------------------


def test_the_steps_follow_the_deadline():
    clock = rule.Clock("data_breach", T0, T0 + 72 * H, 24 * H)
    interval = timedelta(minutes=15)
    due = lambda at: rule.steps_due(clock, at, interval=interval, max_steps=3)  # noqa: E731
    assert due(T0 + 47 * H) == []
    assert due(T0 + 48 * H) == ["warn"]
    assert due(T0 + 72 * H - timedelta(seconds=1)) == ["warn"]
    assert due(T0 + 72 * H) == ["warn", "due"]
    assert due(T0 + 72 * H + interval) == ["warn", "due", "overdue-1"]
    assert due(T0 + 100 * H) == ["warn", "due", "overdue-1", "overdue-2", "overdue-3"]
    done = rule.Clock("data_breach", T0, T0 + 72 * H, 24 * H, done_at=T0 + 80 * H)
    assert rule.steps_due(done, T0 + 100 * H, interval=interval, max_steps=3) == []
    assert rule.verdict(done, T0 + 100 * H) == rule.LATE
    assert rule.verdict(clock, T0 + 71 * H) == rule.PENDING
    assert rule.verdict(clock, T0 + 73 * H) == rule.OVERDUE


# --- start, show, escalate, stop ----------------------------------------------------


@pytest.mark.django_db
def test_a_breach_starts_its_clock_shown_beside_the_sla(responder, responder_client, frozen):
    incident = breach(responder)
    clock = RegulatoryClock.objects.get(incident=incident)
    assert (clock.flag, clock.started_at, clock.deadline) == ("data_breach", T0, T0 + 72 * H)
    assert incident.timeline.filter(kind=EventKind.REGULATORY).count() == 1
    frozen["t"] = T0 + 2 * H
    page = responder_client.get(incident.get_absolute_url()).content.decode()
    header = page[page.index('id="incident-header"') : page.index("</section>")]
    assert 'class="sla' in header
    assert f'data-seconds-left="{70 * 3600}"' in header  # the server's number, to count down
    assert "Notify the data-protection authority" in header
    assert "Authority notified" in header


@pytest.mark.django_db
def test_setting_the_regulatory_flag_later_starts_its_own_clock(responder, frozen):
    incident = factories.declare(actor=responder, now=T0)
    frozen["t"] = T0 + H
    services.set_incident_flags(incident, ["regulatory"], actor=responder)
    clock = RegulatoryClock.objects.get(incident=incident)
    assert (clock.flag, clock.deadline) == ("regulatory", T0 + H + 48 * H)
    frozen["t"] = T0 + 2 * H
    services.set_incident_flags(incident, [], actor=responder)
    clock.refresh_from_db()
    assert clock.stopped_at == T0 + 2 * H
    assert regulatory.escalate_due(T0 + 100 * H) == []  # a stopped clock escalates no more


@pytest.mark.django_db
def test_legal_is_reminded_then_escalated_once_per_step(responder, contacts, monkeypatch):
    queued = []
    monkeypatch.setattr(outbox, "enqueue", lambda ids, queue=None: queued.extend(ids))
    incident = breach(responder)
    legal = ("Legal/Compliance Lex Legal", "email")
    assert regulatory.escalate_due(T0 + 47 * H) == []
    assert len(regulatory.escalate_due(T0 + 48 * H)) == 1
    assert regulatory.escalate_due(T0 + 50 * H) == []  # the same step: nothing more
    assert len(regulatory.escalate_due(T0 + 72 * H)) == 1
    regulatory.escalate_due(T0 + 72 * H + timedelta(minutes=31))
    assert regulatory_rows(incident) == [
        (*legal, "regulatory-data_breach-due"),
        (*legal, "regulatory-data_breach-overdue-1"),
        (*legal, "regulatory-data_breach-overdue-2"),
        (*legal, "regulatory-data_breach-warn"),
    ]
    row = incident.notifications.get(reason="regulatory-data_breach-due")
    assert row.address == "lex@lotolink.test"
    assert incident.title not in row.text + row.subject  # a restricted incident's title stays in
    assert "Notify the data-protection authority: deadline 2026-03-07 15:00" in row.text
    assert len(queued) == 4
    for pk in queued + queued:  # a redelivery (a retried task) sends nothing twice
        outbox.deliver(pk, now=T0 + 73 * H)
    assert (
        sorted(m.subject for m in mail.outbox)
        == [f"[P1] Regulatory deadline: {outbox.restricted_line(incident)}"] * 4
    )
    assert [m.to for m in mail.outbox] == [["lex@lotolink.test"]] * 4
    assert "deadline 2026-03-07 15:00 UTC is near" in mail.outbox[0].body
    events = incident.timeline.filter(kind=EventKind.ESCALATION, data__has_key="clock")
    assert events.count() == 3


@pytest.mark.django_db
def test_recording_the_notification_stops_the_clock_and_is_audited(
    responder, contacts, frozen, monkeypatch
):
    monkeypatch.setattr(outbox, "enqueue", lambda ids, queue=None: None)
    incident = breach(responder)
    regulatory.escalate_due(T0 + 72 * H)  # warn and due, pending (not sent yet)
    clock = RegulatoryClock.objects.get(incident=incident)
    with pytest.raises(IncidentError, match="Say whom you notified"):
        regulatory.record_notified(clock, actor=responder, note="   ")
    frozen["t"] = T0 + 73 * H
    regulatory.record_notified(clock, actor=responder, note="AEPD, ref 2026/118")
    clock.refresh_from_db()
    assert (clock.done_at, clock.done_by, clock.done_note) == (
        T0 + 73 * H,
        responder,
        "AEPD, ref 2026/118",
    )
    statuses = set(
        incident.notifications.filter(kind=Notification.REGULATORY).values_list("status", flat=True)
    )
    assert statuses == {NotificationStatus.CANCELLED}
    event = incident.timeline.filter(kind=EventKind.REGULATORY).last()
    assert event.actor == responder and "done late" in event.message
    assert "AEPD, ref 2026/118" in event.message
    assert regulatory.escalate_due(T0 + 100 * H) == []
    with pytest.raises(IncidentError, match="Already recorded by ana"):
        regulatory.record_notified(clock, actor=responder, note="again")


@pytest.mark.django_db
def test_the_button_records_it_and_bad_input_changes_nothing(
    responder, viewer, client, frozen, settings
):
    # The clock moves an hour between two requests: not a session's idle limit here.
    settings.SESSION_IDLE_TIMEOUT = 24 * 3600
    incident = breach(responder, category="payment")  # not restricted: the viewer sees it
    url = reverse("incidents:regulatory_done", args=[incident.pk, "data_breach"])
    client.force_login(viewer)
    assert client.post(url, {"note": "x"}).status_code == 403
    client.force_login(responder)
    assert (
        client.post(
            reverse("incidents:regulatory_done", args=[incident.pk, "nope"]), {"note": "x"}
        ).status_code
        == 404
    )
    response = client.post(url, {"note": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert "How the authority was notified: This field is required." in response.content.decode()
    assert RegulatoryClock.objects.get(incident=incident).done_at is None
    frozen["t"] = T0 + H
    response = client.post(url, {"note": "Notified the AEPD by its portal, ref 118"})
    assert response.status_code == 302
    clock = RegulatoryClock.objects.get(incident=incident)
    assert clock.done_at == T0 + H and clock.done_by == responder
    page = client.get(incident.get_absolute_url()).content.decode()
    assert "done on time (ana" in page
    assert "Authority notified</button>" not in page


@pytest.mark.django_db
def test_the_exports_list_the_clocks(responder):
    incident = breach(responder)
    clock = RegulatoryClock.objects.get(incident=incident)
    regulatory.record_notified(clock, actor=responder, note="AEPD ref 118", now=T0 + 5 * H)
    report = exports.incident_report(incident)
    markdown = exports.incident_markdown(report)
    assert "## Regulatory Deadlines" in markdown
    assert "| Notify the data-protection authority | data breach |" in markdown
    assert "done on time" in markdown and "AEPD ref 118" in markdown
    assert exports.incident_pdf(report).startswith(b"%PDF")
    rows = report_figures.rows_for(type(incident).objects.filter(pk=incident.pk))
    text = exports.period_csv(rows, T0 + 6 * H)
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["regulatory_deadlines"] == (
        f"data_breach: deadline {(T0 + 72 * H).isoformat()}, met {(T0 + 5 * H).isoformat()}"
    )


# Two beats write at once: SQLite's in-memory test database (shared cache) locks its
# tables regardless of the busy timeout ("database table is locked"); the race is
# PostgreSQL's (the embedded default's file database waits instead).
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_send_each_step_once(responder, contacts, monkeypatch):
    monkeypatch.setattr(outbox, "enqueue", lambda ids, queue=None: None)
    incident = breach(responder)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(timeout=5)
            regulatory.escalate_due(T0 + 72 * H)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    keys = regulatory_rows(incident)
    assert len(keys) == len(set(keys)) == 2  # warn and due, once each
    assert incident.timeline.filter(kind=EventKind.ESCALATION, data__has_key="clock").count() == 1
