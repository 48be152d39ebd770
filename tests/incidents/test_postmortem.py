"""Resolution starts the post-incident procedure: checklists with deadlines and
reminders, and a post-mortem draft edited in place without losing anyone's text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.urls import reverse

from incidents import services
from incidents.models import (
    POST_PHASES,
    ChecklistItem,
    ChecklistPhase,
    EventKind,
    Notification,
    PostMortem,
    Status,
)
from incidents.paging import outbox
from incidents.postincident import followups, postmortem
from incidents.postincident import tasks as postincident_tasks
from tests import factories
from tests.incidents.fake_servers import SmtpRecorder, free_port
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db


def post_items(incident):
    return list(ChecklistItem.objects.filter(incident=incident, phase__in=POST_PHASES))


def test_resolving_creates_the_runbook_post_incident_lists_due_24h_3d_1w(responder):
    incident = lived(responder)
    resolved = T0 + timedelta(minutes=120)
    items = post_items(incident)
    assert len(items) == 11
    due = {item.phase: item.due_at for item in items}
    assert due[ChecklistPhase.POST_24H] == resolved + timedelta(hours=24)
    assert due[ChecklistPhase.POST_3D] == resolved + timedelta(days=3)
    assert due[ChecklistPhase.POST_1W] == resolved + timedelta(weeks=1)
    assert "Hold blameless post-mortem meeting" in {i.text for i in items}


def test_an_open_incident_has_no_post_incident_work(responder):
    incident = lived(responder, resolve=None)
    assert post_items(incident) == []
    assert not PostMortem.objects.filter(incident=incident).exists()


def test_reopen_and_resolve_again_keeps_one_set_due_from_the_final_resolution(responder):
    incident = lived(responder)
    first = post_items(incident)
    done = first[0]
    services.set_checklist_item(done, done=True, actor=responder)
    postmortem.save_section(
        incident.postmortem,
        "lessons_learned",
        {"lessons_learned": "Alert on webhook lag."},
        version=incident.postmortem.version,
        original={"lessons_learned": ""},
        actor=responder,
    )
    services.reopen_incident(
        incident, actor=responder, reason="errors again", now=T0 + timedelta(hours=3)
    )
    final = T0 + timedelta(hours=5)
    services.transition_incident(incident, Status.RESOLVED, actor=responder, now=final)
    again = post_items(incident)
    assert len(again) == len(first) == 11
    undone = [i for i in again if i.done_at is None]
    assert all(i.due_at >= final + timedelta(hours=24) for i in undone)
    done.refresh_from_db()
    assert done.done_at is not None
    assert PostMortem.objects.filter(incident=incident).count() == 1
    assert PostMortem.objects.get(incident=incident).lessons_learned == "Alert on webhook lag."


def test_the_draft_is_prefilled_from_what_happened(responder):
    incident = lived(responder, commander=responder, summary="Stripe webhooks 500ing")
    pm = incident.postmortem
    assert pm.title == incident.title
    assert pm.author == "ana"
    assert pm.summary == "Stripe webhooks 500ing"
    assert pm.impact_users == "120 affected users (estimate)"
    assert "rolled back the deploy" in pm.resolution
    events = postmortem.included_events(pm)
    kinds = [e.kind for e in events]
    assert kinds == [EventKind.DECLARED, EventKind.ACKNOWLEDGED, EventKind.STATUS, EventKind.STATUS]
    labels = [line.text for line in postmortem.timeline_lines(events)]
    assert labels[0].startswith("First alert triggered")
    assert labels[1].startswith("On-call acknowledged")
    assert labels[2].startswith("Mitigation applied")
    assert labels[3].startswith("Service restored")


# --- reminders, with a controlled clock ----------------------------------------------


def deliver_reminders(incident) -> list[str]:
    """What a worker does with the reminder rows in the outbox: deliver each once."""
    rows = incident.notifications.filter(kind=Notification.REMINDER, status="pending")
    return [outbox.deliver(pk)[0] for pk in rows.values_list("pk", flat=True)]


@pytest.fixture
def smtp(settings):
    """A loopback SMTP server: a reminder is "sent" only when a real channel took it."""
    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = (
        "127.0.0.1",
        controller.port,
        5,
    )
    yield recorder
    controller.stop()


def test_reminders_go_out_once_when_each_item_is_due(responder, smtp):
    responder.email = "ana@lotolink.test"
    responder.save()
    incident = lived(responder, commander=responder)
    resolved = T0 + timedelta(minutes=120)
    assert followups.send_due_reminders(now=resolved + timedelta(hours=23)) == []
    sent = followups.send_due_reminders(now=resolved + timedelta(hours=25))
    assert len(sent) == 4
    assert deliver_reminders(incident) == ["sent"] * 4
    assert len(smtp.messages) == 4
    to, message = smtp.messages[0]
    assert to == ["ana@lotolink.test"]
    assert "Confirm service is stable" in message.get_payload(decode=True).decode()
    assert followups.send_due_reminders(now=resolved + timedelta(hours=26)) == []
    assert deliver_reminders(incident) == []
    assert len(followups.send_due_reminders(now=resolved + timedelta(days=8))) == 7
    assert deliver_reminders(incident) == ["sent"] * 7
    assert len(smtp.messages) == 11
    # Each reminder is a Notification row, on the "Who's told" card, sent once.
    rows = incident.notifications.filter(kind=Notification.REMINDER)
    assert rows.count() == 11 and set(rows.values_list("status", flat=True)) == {"sent"}
    sent_events = incident.timeline.filter(kind=EventKind.NOTIFICATION, data__status="sent")
    assert sent_events.count() == 11
    assert "emailed ana@lotolink.test" in sent_events.first().message


def test_a_done_item_is_not_reminded(responder):
    incident = lived(responder, commander=responder)
    for item in post_items(incident):
        services.set_checklist_item(item, done=True, actor=responder)
    assert followups.send_due_reminders(now=T0 + timedelta(days=30)) == []


def test_a_failing_mail_server_is_recorded_and_not_retried_forever(responder, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2
    responder.email = "ana@lotolink.test"
    responder.save()
    incident = lived(responder, commander=responder)
    assert len(followups.send_due_reminders(now=T0 + timedelta(days=2))) == 4
    assert deliver_reminders(incident) == ["retrying"] * 4
    event = incident.timeline.filter(kind=EventKind.NOTIFICATION, data__status="retrying").first()
    assert "failed" in event.message and "email" in event.message.lower()
    assert followups.send_due_reminders(now=T0 + timedelta(days=2)) == []
    # The outbox retries with backoff and gives up after its last attempt.
    row = incident.notifications.filter(kind=Notification.REMINDER).first()
    for _ in range(5):
        Notification.objects.filter(pk=row.pk).update(due_at=T0)
        outbox.deliver(row.pk)
    row.refresh_from_db()
    assert row.status == "failed" and row.attempts == 4


def test_with_the_console_email_backend_a_reminder_is_not_delivered_not_sent(responder, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    responder.email = "ana@lotolink.test"
    responder.save()
    incident = lived(responder, commander=responder)
    assert len(followups.send_due_reminders(now=T0 + timedelta(days=2))) == 4
    assert deliver_reminders(incident) == ["not delivered"] * 4
    rows = incident.notifications.filter(kind=Notification.REMINDER)
    assert set(rows.values_list("status", flat=True)) == {"undelivered"}
    assert not incident.timeline.filter(kind=EventKind.NOTIFICATION, data__status="sent").exists()


def test_the_beat_task_run_twice_reminds_once(responder):
    lived(responder, commander=responder, at=T0.replace(year=2025))
    assert postincident_tasks.send_checklist_reminders.apply().get() == 11
    assert postincident_tasks.send_checklist_reminders.apply().get() == 0


def test_the_dashboard_shows_overdue_post_incident_items(client, responder):
    lived(responder, at=T0.replace(year=2025), title="Old webhook outage")
    client.force_login(responder)
    response = client.get("/")
    html = response.content.decode()
    assert 'id="overdue-followups"' in html
    assert "Confirm service is stable" in html
    assert "11 checklist items" in html


# --- editing -----------------------------------------------------------------------


def section_url(incident, section):
    return reverse("incidents:postmortem_section", args=[incident.pk, section])


def test_a_section_saves_in_place_with_htmx_and_redirects_without(client, responder):
    incident = lived(responder)
    pm = incident.postmortem
    client.force_login(responder)
    page = client.get(reverse("incidents:postmortem", args=[incident.pk]))
    assert page.status_code == 200
    assert 'id="pm-root_cause"' in page.content.decode()
    editor = client.get(section_url(incident, "root_cause") + "?edit=1", HTTP_HX_REQUEST="true")
    assert "<textarea" in editor.content.decode()
    data = {"root_cause": "Pool size 5 after config change", "version": pm.version}
    data["original_root_cause"] = pm.root_cause
    response = client.post(section_url(incident, "root_cause"), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card pm-section" id="pm-root_cause">')
    assert "Pool size 5 after config change" in html
    data = {"lessons_learned": "Review pool settings", "version": pm.version + 1}
    data["original_lessons_learned"] = ""
    plain = client.post(section_url(incident, "lessons_learned"), data)
    assert plain.status_code == 302
    pm.refresh_from_db()
    assert (pm.root_cause, pm.lessons_learned, pm.version) == (
        "Pool size 5 after config change",
        "Review pool settings",
        3,
    )
    assert incident.timeline.filter(message__contains="edited the post-mortem: root cause").exists()


def test_a_concurrent_edit_is_refused_showing_both_texts_and_losing_nothing(
    client, responder, other_responder
):
    incident = lived(responder)
    pm = incident.postmortem
    loaded = {"version": pm.version, "original_root_cause": pm.root_cause}
    client.force_login(responder)
    first = client.post(
        section_url(incident, "root_cause"), {**loaded, "root_cause": "Ana: pool exhausted"}
    )
    assert first.status_code == 302
    client.force_login(other_responder)
    second = client.post(
        section_url(incident, "root_cause"), {**loaded, "root_cause": "Ben: bad deploy"}
    )
    assert second.status_code == 409
    html = second.content.decode()
    assert "Ana: pool exhausted" in html  # theirs, shown
    assert "Ben: bad deploy</textarea>" in html  # mine, kept in the form
    assert "since you opened it" in html
    pm.refresh_from_db()
    assert pm.root_cause == "Ana: pool exhausted"
    # Saving again from the conflict form (it carries the new version) goes through.
    retry = client.post(
        section_url(incident, "root_cause"),
        {
            "version": pm.version,
            "original_root_cause": pm.root_cause,
            "root_cause": "Ana + Ben: pool exhausted after a bad deploy",
        },
        HTTP_HX_REQUEST="true",
    )
    assert retry.status_code == 200
    pm.refresh_from_db()
    assert pm.root_cause == "Ana + Ben: pool exhausted after a bad deploy"


def test_editing_another_section_meanwhile_is_not_a_conflict(responder, other_responder):
    incident = lived(responder)
    pm = incident.postmortem
    v = pm.version
    postmortem.save_section(
        pm, "summary", {"summary": "A"}, version=v, original={"summary": pm.summary},
        actor=responder,
    )  # fmt: skip
    saved = postmortem.save_section(
        pm, "resolution", {"resolution": "B"}, version=v, original={"resolution": pm.resolution},
        actor=other_responder,
    )  # fmt: skip
    assert (saved.summary, saved.resolution, saved.version) == ("A", "B", v + 2)


def test_the_timeline_picker_saves_the_chosen_events_only_from_this_incident(client, responder):
    incident = lived(responder)
    other = lived(responder, title="Another one")
    pm = incident.postmortem
    events = list(incident.timeline.order_by("id"))
    client.force_login(responder)
    url = reverse("incidents:postmortem_timeline", args=[incident.pk])
    original = ",".join(str(i) for i in pm.timeline_event_ids)
    chosen = [events[0].pk, events[-1].pk]
    response = client.post(
        url, {"events": chosen, "version": pm.version, "original": original}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    pm.refresh_from_db()
    assert pm.timeline_event_ids == chosen
    foreign = other.timeline.first().pk
    refused = client.post(
        url,
        {"events": [foreign], "version": pm.version, "original": ",".join(map(str, chosen))},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 422
    pm.refresh_from_db()
    assert pm.timeline_event_ids == chosen


def test_a_viewer_reads_but_cannot_edit(client, responder, viewer):
    incident = lived(responder)
    pm = incident.postmortem
    client.force_login(viewer)
    assert client.get(reverse("incidents:postmortem", args=[incident.pk])).status_code == 200
    response = client.post(
        section_url(incident, "summary"), {"summary": "x", "version": pm.version}
    )
    assert response.status_code == 403


def test_a_restricted_incidents_post_mortem_is_hidden(client, responder, other_responder):
    incident = lived(responder, category="security", title="Leaked key")
    client.force_login(other_responder)
    assert client.get(reverse("incidents:postmortem", args=[incident.pk])).status_code == 404


def test_an_older_resolved_incident_gets_its_draft_on_request(client, responder):
    incident = lived(responder)
    PostMortem.objects.filter(incident=incident).delete()
    client.force_login(responder)
    page = client.get(reverse("incidents:postmortem", args=[incident.pk]))
    assert "Start the post-mortem" in page.content.decode()
    client.post(reverse("incidents:postmortem_start", args=[incident.pk]))
    assert PostMortem.objects.filter(incident=incident).exists()


def test_the_incident_page_links_the_post_mortem_once_resolved(client, responder):
    open_one = factories.declare(actor=responder)
    resolved = lived(responder)
    client.force_login(responder)
    assert "Open the post-mortem" not in client.get(open_one.get_absolute_url()).content.decode()
    assert "Open the post-mortem" in client.get(resolved.get_absolute_url()).content.decode()
