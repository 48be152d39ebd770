"""Admins maintain severities, contacts and checklists in Django admin."""

from __future__ import annotations

import pytest

from incidents.models import EscalationContact, Incident, Severity
from incidents.seed import seed_runbook
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, runbook):
    user = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/incidents/severity/",
        "/admin/incidents/escalationcontact/",
        "/admin/incidents/escalationcontact/?role__exact=cto&q=security",
        "/admin/incidents/checklisttemplate/",
        "/admin/incidents/incident/?status__exact=declared&q=payment",
        "/admin/incidents/timelineevent/?kind__exact=note",
        "/admin/diagnostics/workerheartbeat/",
    ],
)
def test_admin_lists_filters_and_search(admin_client, path, responder):
    factories.declare(actor=responder)
    assert admin_client.get(path).status_code == 200


def test_admin_edits_an_incident_and_a_severity(admin_client, responder):
    incident = factories.declare(actor=responder)
    assert admin_client.get(f"/admin/incidents/incident/{incident.pk}/change/").status_code == 200
    p3 = Severity.objects.get(key="P3")
    assert admin_client.get(f"/admin/incidents/severity/{p3.pk}/change/").status_code == 200


def test_incidents_are_declared_in_the_app_not_added_in_admin(admin_client):
    assert admin_client.get("/admin/incidents/incident/add/").status_code == 403


def test_a_timeline_event_added_in_admin_is_appended_with_its_author(admin_client, responder):
    incident = factories.declare(actor=responder)
    response = admin_client.post(
        "/admin/incidents/timelineevent/add/",
        {
            "incident": incident.pk,
            "kind": "note",
            "message": "Correction: started 02:50",
            "data": "{}",
            "created_at_0": "2026-11-26",
            "created_at_1": "03:00:00",
        },
    )
    assert response.status_code == 302
    event = incident.timeline.last()
    assert event.message == "Correction: started 02:50" and event.actor.username == "root"


def test_seeding_is_idempotent_and_keeps_admin_edits(runbook):
    contact = EscalationContact.objects.get(role="tech_lead")
    contact.name = "Rosa Díaz"
    contact.save()
    assert seed_runbook() == {"severities": 0, "contacts": 0, "checklists": 0, "groups": 0}
    assert EscalationContact.objects.get(role="tech_lead").name == "Rosa Díaz"
    assert Severity.objects.count() == 4
    assert sorted(EscalationContact.objects.values_list("role", flat=True)) == sorted(
        ["on_call", "tech_lead", "engineering_manager", "cto", "legal"]
    )
    assert not Incident.objects.exists()
