"""Every state change goes through a service that writes the timeline in the same
transaction and refuses what the incident's state does not allow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from incidents import services
from incidents.models import ChecklistPhase, EventKind, Incident, Severity, Status, TimelineEvent
from incidents.services import IncidentError
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 7, 2, 58, tzinfo=UTC)


def kinds(incident: Incident) -> list[str]:
    return list(incident.timeline.order_by("id").values_list("kind", flat=True))


def test_declaring_starts_the_sla_clock_the_checklists_and_the_timeline(responder):
    incident = factories.declare(actor=responder, severity="P0", title="Payments DOWN!!", now=T0)
    assert incident.status == Status.DECLARED
    assert incident.response_deadline == T0 + timedelta(minutes=15)
    assert incident.channel_name == "#incident-2026-03-07-payments-down"
    phases = set(incident.checklist.values_list("phase", flat=True))
    assert phases == {ChecklistPhase.INITIAL, ChecklistPhase.ASSESS, ChecklistPhase.COMMUNICATION}
    assert "Determine number of affected users" in incident.checklist.values_list("text", flat=True)
    assert kinds(incident) == [EventKind.DECLARED]
    assert incident.timeline.get().data["severity"] == "P0"


@pytest.mark.parametrize(("key", "minutes"), [("P0", 15), ("P1", 30), ("P2", 120), ("P3", 1440)])
def test_each_severity_gives_its_response_deadline(responder, key, minutes):
    incident = factories.declare(actor=responder, severity=key, now=T0)
    assert incident.response_deadline - incident.declared_at == timedelta(minutes=minutes)


def test_security_incidents_are_restricted_by_default(responder):
    incident = factories.declare(actor=responder, category="security", title="Leaked key")
    assert incident.restricted
    assert not factories.declare(actor=responder).restricted


def test_channel_names_stay_within_slacks_limit(responder):
    incident = factories.declare(actor=responder, title="x" * 200, now=T0)
    assert len(incident.channel_name) == 81  # "#" + 80
    assert incident.channel_name.startswith("#incident-2026-03-07-xxx")


def test_a_title_without_letters_is_refused_and_nothing_is_created(responder):
    with pytest.raises(IncidentError):
        factories.declare(actor=responder, title="   ")
    assert not Incident.objects.exists()


def test_acknowledge_records_who_and_when_and_whether_the_sla_was_met(incident, other_responder):
    at = incident.declared_at + timedelta(minutes=12)
    event = services.acknowledge_incident(incident, actor=other_responder, now=at)
    assert incident.status == Status.ACKNOWLEDGED
    assert incident.acknowledged_at == at
    assert incident.acknowledged_by == other_responder
    assert event.data["sla_met"] is True
    assert not incident.sla_breached()


def test_a_late_acknowledge_is_marked_as_a_breach(incident, responder):
    at = incident.declared_at + timedelta(minutes=31)
    event = services.acknowledge_incident(incident, actor=responder, now=at)
    assert event.data["sla_met"] is False
    assert incident.sla_breached()
    assert "outside the P1 response time" in event.message


def test_a_second_acknowledge_is_refused_and_changes_nothing(incident, responder, other_responder):
    services.acknowledge_incident(incident, actor=responder)
    before = (incident.acknowledged_at, incident.timeline.count())
    with pytest.raises(IncidentError, match="already acknowledged by ana"):
        services.acknowledge_incident(incident, actor=other_responder)
    incident.refresh_from_db()
    assert (incident.acknowledged_at, incident.timeline.count()) == before
    assert incident.acknowledged_by == responder


def test_the_whole_lifecycle_stamps_every_transition(incident, responder):
    services.acknowledge_incident(incident, actor=responder)
    for status in (Status.INVESTIGATING, Status.MITIGATED, Status.RESOLVED, Status.CLOSED):
        services.transition_incident(incident, status, actor=responder)
        assert incident.status == status
    for field in (
        "acknowledged_at",
        "investigating_at",
        "mitigated_at",
        "resolved_at",
        "closed_at",
    ):
        assert getattr(incident, field) is not None, field
    assert kinds(incident) == ["declared", "acknowledged", "status", "status", "status", "status"]


@pytest.mark.parametrize(
    ("setup", "target", "message"),
    [
        ([], Status.INVESTIGATING, "Acknowledge the incident first"),
        (["ack"], Status.CLOSED, "cannot move to closed"),
        (["ack"], Status.ACKNOWLEDGED, "cannot move to acknowledged"),
        (["ack", Status.RESOLVED], Status.INVESTIGATING, "reopen it"),
        (["ack"], "exploded", "Unknown status"),
    ],
)
def test_invalid_transitions_are_refused_with_a_clear_message(
    incident, responder, setup, target, message
):
    for step in setup:
        if step == "ack":
            services.acknowledge_incident(incident, actor=responder)
        else:
            services.transition_incident(incident, step, actor=responder)
    status, events = incident.status, incident.timeline.count()
    with pytest.raises(IncidentError, match=message):
        services.transition_incident(incident, target, actor=responder)
    incident.refresh_from_db()
    assert (incident.status, incident.timeline.count()) == (status, events)


def test_reopening_needs_a_reason_and_clears_the_resolution(incident, responder):
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.RESOLVED, actor=responder)
    with pytest.raises(IncidentError, match="Say why"):
        services.reopen_incident(incident, actor=responder, reason="  ")
    assert incident.status == Status.RESOLVED
    event = services.reopen_incident(incident, actor=responder, reason="errors are back")
    assert incident.status == Status.INVESTIGATING
    assert incident.resolved_at is None and incident.reopened_at is not None
    assert event.data["reason"] == "errors are back"


def test_an_open_incident_cannot_be_reopened(incident, responder):
    with pytest.raises(IncidentError, match="Only a resolved or closed"):
        services.reopen_incident(incident, actor=responder, reason="why not")


def test_changing_severity_moves_the_deadline_and_needs_a_reason(incident, responder):
    p0 = Severity.objects.get(key="P0")
    with pytest.raises(IncidentError, match="Say why"):
        services.change_severity(incident, p0, actor=responder, reason="")
    event = services.change_severity(incident, p0, actor=responder, reason="all payments failing")
    assert incident.severity == p0
    assert incident.response_deadline == incident.declared_at + timedelta(minutes=15)
    assert event.data == {
        "from": "P1",
        "to": "P0",
        "reason": "all payments failing",
        "response_deadline": incident.response_deadline.isoformat(),
    }
    with pytest.raises(IncidentError, match="already P0"):
        services.change_severity(incident, p0, actor=responder, reason="again")


def test_assigning_a_commander(incident, responder, other_responder):
    services.assign_commander(incident, other_responder, actor=responder)
    assert incident.commander == other_responder
    with pytest.raises(IncidentError, match="already the commander"):
        services.assign_commander(incident, other_responder, actor=responder)


def test_a_restricted_incidents_commander_is_granted_access(responder, other_responder):
    incident = factories.declare(actor=responder, category="security", title="Intrusion")
    assert not other_responder.has_perm("incidents.view_incident", incident)
    services.assign_commander(incident, other_responder, actor=responder)
    assert (
        type(other_responder)
        .objects.get(pk=other_responder.pk)
        .has_perm("incidents.view_incident", incident)
    )


def test_notes_and_status_updates_land_on_the_timeline(incident, responder):
    services.add_note(incident, "  pods restarting  ", actor=responder)
    update = services.post_status_update(incident, "Investigating payment errors", actor=responder)
    assert kinds(incident)[-2:] == [EventKind.NOTE, EventKind.STATUS_UPDATE]
    assert incident.timeline.get(kind=EventKind.NOTE).message == "pods restarting"
    assert update.data == {"status": "declared", "severity": "P1", "channel": incident.channel_name}


@pytest.mark.parametrize("service", [services.add_note, services.post_status_update])
def test_empty_text_is_refused(incident, responder, service):
    with pytest.raises(IncidentError, match="cannot be empty"):
        service(incident, " \n ", actor=responder)
    assert kinds(incident) == [EventKind.DECLARED]


def test_ticking_a_checklist_item_twice_records_it_once(incident, responder):
    item = incident.checklist.first()
    assert services.set_checklist_item(item, done=True, actor=responder) is not None
    assert services.set_checklist_item(item, done=True, actor=responder) is None
    assert item.done and item.done_by == responder
    services.set_checklist_item(item, done=False, actor=responder)
    assert not item.done
    assert kinds(incident).count(EventKind.CHECKLIST) == 2


def test_the_timeline_is_append_only(incident):
    event = incident.timeline.get()
    event.message = "rewritten"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        TimelineEvent.objects.filter(pk=event.pk).update(message="rewritten")


def test_a_failing_service_leaves_no_partial_timeline(incident, responder):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.add_note(incident, "written", actor=responder)
        raise RuntimeError("boom")
    assert kinds(incident) == [EventKind.DECLARED]
