"""The post-mortem of an incident an alert declared: "First alert triggered" is the
alert's own row (its start time, its label), the declaration a row of its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from incidents.models import EventKind, Incident, Status
from incidents.postincident import postmortem
from incidents.services import acknowledge_incident, declare_incident, transition_incident
from tests.alerts.helpers import alert, payload

pytestmark = pytest.mark.django_db


def test_the_draft_starts_with_the_alert_then_the_declaration(am_post, responder):
    started = timezone.now().replace(microsecond=0) - timedelta(minutes=9)
    am_post(payload(alert("PostgresConnectionsExhausted", starts=started, instance="db-7")))
    incident = Incident.objects.get()
    acknowledge_incident(incident, actor=responder)
    for status in (Status.INVESTIGATING, Status.MITIGATED, Status.RESOLVED):
        transition_incident(incident, status, actor=responder, note="done")

    draft = postmortem.draft_for(incident, actor=responder)
    events = list(
        incident.timeline.filter(pk__in=draft.timeline_event_ids).order_by("created_at", "id")
    )
    lines = postmortem.timeline_lines(events)

    assert lines[0].at == started
    assert lines[0].text == (
        "First alert triggered: PostgresConnectionsExhausted: PostgresConnectionsExhausted on db-7"
    )
    assert lines[1].at == incident.declared_at > started
    assert lines[1].text.startswith("Incident declared: LotoOps declared P0 database incident")
    assert [line.text.split(":")[0] for line in lines[2:]] == [
        "On-call acknowledged",
        "Investigation started",
        "Mitigation applied",
        "Service restored",
    ]
    assert sum("First alert triggered" in line.text for line in lines) == 1
    # The post-mortem drafted on resolving (what the page and the exports read) too.
    incident.refresh_from_db()
    saved = postmortem.included_events(incident.postmortem)
    assert [e.kind for e in saved][:2] == [EventKind.ALERT, EventKind.DECLARED]
    assert [line.text for line in postmortem.timeline_lines(saved)] == [line.text for line in lines]


def test_a_person_declaring_is_still_the_first_row(responder, runbook):
    from incidents.models import Severity

    incident = declare_incident(
        title="Checkout down",
        category="payment",
        severity=Severity.objects.get(key="P1"),
        actor=responder,
    )
    events = list(incident.timeline.order_by("id"))
    lines = postmortem.timeline_lines([e for e in events if postmortem.default_selected(e)])
    assert lines[0].text.startswith("First alert triggered: ana declared P1")
