"""Admins maintain severities, contacts and checklists in Django admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from incidents.models import ActionItem, EscalationContact, Incident, Rotation, Severity
from incidents.seed import seed_runbook
from tests import factories
from tests.incidents.test_admin_restricted import _form_data

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


# --- working an incident is not an admin edit (issue 20, hole 4) ------------------------


def test_an_incidents_state_commander_category_and_flags_are_read_only_in_admin(
    admin_client, responder
):
    """Even a superuser's admin form cannot clear a data breach, turn the incident into
    a security one without restricting it, take command or move its status: those
    change on the incident page, through the services and onto the timeline."""
    incident = factories.declare(
        actor=responder, severity="P1", flags=["data_breach", "regulatory"]
    )
    before = (incident.timeline.count(), incident.notifications.count())
    page = admin_client.get(f"/admin/incidents/incident/{incident.pk}/change/")
    data = _form_data(page)
    for field in ["status", "severity", "commander", "category", "data_breach", "regulatory"]:
        assert field not in data, f"{field} is editable in admin"
    root = page.wsgi_request.user
    data |= {
        "title": "Payment webhooks failing (corrected)",
        "status": "resolved",
        "severity": Severity.objects.get(key="P3").pk,
        "commander": root.pk,
        "category": "security",
        "security": "on",
    }
    data.pop("data_breach", None)
    response = admin_client.post(f"/admin/incidents/incident/{incident.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    incident.refresh_from_db()
    assert incident.title == "Payment webhooks failing (corrected)"  # a correction: allowed
    assert (incident.status, incident.severity.key, incident.commander) == ("declared", "P1", None)
    assert (incident.category, incident.security, incident.restricted) == ("payment", False, False)
    assert incident.data_breach and incident.regulatory
    assert (incident.timeline.count(), incident.notifications.count()) == before


def test_an_action_items_status_is_read_only_in_admin(admin_client, responder):
    incident = factories.declare(actor=responder)
    item = ActionItem.objects.create(incident=incident, text="Add a webhook failure alert")
    page = admin_client.get(f"/admin/incidents/actionitem/{item.pk}/change/")
    data = _form_data(page)
    assert "status" not in data
    created = data.pop("created_at")
    data |= {"status": "verified", "created_at_0": f"{created:%Y-%m-%d}"}
    data["created_at_1"] = f"{created:%H:%M:%S}"
    response = admin_client.post(f"/admin/incidents/actionitem/{item.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    item.refresh_from_db()
    assert item.status == "open" and item.verified_at is None and item.verification_run is None


# --- who names the person a security page reaches (issue 20, hole 1) --------------------


@pytest.fixture
def admin1(client, runbook):
    """A seeded Admin: staff, the Admins group, nothing else."""
    user = factories.UserFactory(username="admin1", is_staff=True)
    user.groups.add(Group.objects.get(name="Admins"))
    client.force_login(user)
    return user


def _contact_form(contact: EscalationContact, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "role": contact.role,
        "name": contact.name,
        "level": contact.level,
        "when_to_escalate": contact.when_to_escalate,
        "categories": contact.categories,
        "flags": contact.flags,
        "severities": [s.pk for s in contact.severities.all()],
        "active": "on",
    }
    if contact.always:
        data["always"] = "on"
    if contact.in_escalation_chain:
        data["in_escalation_chain"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_an_admin_cannot_name_himself_the_person_behind_a_security_contact(client, admin1):
    legal = EscalationContact.objects.get(role="legal")
    data = _contact_form(legal, user=admin1.pk, categories=["security"])
    response = client.post(f"/admin/incidents/escalationcontact/{legal.pk}/change/", data)
    assert response.status_code == 200
    assert "Only a superuser may name the LotoOps user" in response.content.decode()
    legal.refresh_from_db()
    assert legal.user is None and legal.categories == []
    # Without the user, the rest of the contact is theirs to edit.
    data = _contact_form(legal, categories=["security"], email="legal@lotolink.test")
    response = client.post(f"/admin/incidents/escalationcontact/{legal.pk}/change/", data)
    assert response.status_code == 302
    legal.refresh_from_db()
    assert legal.categories == ["security"] and legal.email == "legal@lotolink.test"


def test_a_superuser_may_name_the_person_behind_a_security_contact(admin_client, responder):
    legal = EscalationContact.objects.get(role="legal")
    data = _contact_form(legal, user=responder.pk, categories=["security"])
    response = admin_client.post(f"/admin/incidents/escalationcontact/{legal.pk}/change/", data)
    assert response.status_code == 302
    legal.refresh_from_db()
    assert legal.user == responder


def test_an_admin_cannot_name_himself_a_member_of_the_on_call_rota(client, admin1):
    data = {
        "name": "Platform on-call",
        "role": "on_call",
        "time_zone": "UTC",
        "start_date": "2026-01-05",
        "handoff_time": "09:00",
        "shift_days": 7,
        "active": "on",
        "members-TOTAL_FORMS": 1,
        "members-INITIAL_FORMS": 0,
        "members-0-position": 0,
        "members-0-name": "Admin One",
        "members-0-user": admin1.pk,
        "overrides-TOTAL_FORMS": 0,
        "overrides-INITIAL_FORMS": 0,
    }
    response = client.post("/admin/incidents/rotation/add/", data)
    assert response.status_code == 200
    assert "Only a superuser may name the LotoOps user" in response.content.decode()
    assert not Rotation.objects.exists()
    data.pop("members-0-user")
    assert client.post("/admin/incidents/rotation/add/", data).status_code == 302
    assert Rotation.objects.get().members.get().user is None
