"""The audit trail: who did what and when (state changes, actions, grants, admin
changes including `restricted`, exports), for managers and admins, as CSV too; and
the roles it relies on, seeded as groups."""

from __future__ import annotations

import csv
import importlib
import io

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from incidents import services
from incidents.models import AuditEntry, Category
from incidents.seed import ROLES, seed_runbook
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(runbook):
    user = factories.UserFactory(username="maria")
    user.groups.add(Group.objects.get(name="Managers"))
    return user


@pytest.fixture
def root(runbook):
    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


def audit_rows(client) -> list[dict[str, str]]:
    response = client.get(reverse("incidents:audit_csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_the_trail_holds_state_changes_admin_changes_grants_and_exports(
    client, manager, root, responder, other_responder
):
    incident = factories.declare(actor=responder, title="Stripe webhooks failing")
    services.acknowledge_incident(incident, actor=other_responder)
    client.force_login(root)
    # An admin change of `restricted` (through the service, so also on the timeline) ...
    form = client.get(f"/admin/incidents/incident/{incident.pk}/change/")
    data = {k: v for k, v in form.context["adminform"].form.initial.items() if v is not None}
    data |= {"category": incident.category, "title": incident.title, "restricted": "on"}
    data |= {"impacted_services": '["stripe"]', "commander": ""}
    for prefix in ("checklist", "timeline"):
        data |= {f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0}
    client.post(f"/admin/incidents/incident/{incident.pk}/change/", data)
    # ... a grant on the object-permission page, and an export.
    client.post(
        f"/admin/incidents/incident/{incident.pk}/permissions/user-manage/{manager.pk}/",
        {"permissions": ["view_incident"]},
    )
    client.get(reverse("incidents:export_md", args=[incident.pk]))

    client.force_login(manager)  # granted the incident just above
    rows = audit_rows(client)
    said = [(r["who"], r["source"], r["action"], r["summary"]) for r in rows]
    assert ("ben", "timeline", "acknowledged") in {s[:3] for s in said}
    assert any(s[0] == "root" and "restricted the incident" in s[3] for s in said)
    assert any(s[:3] == ("root", "admin", "admin change") for s in said)
    assert any(s[:3] == ("root", "audit", "grant") and "view_incident" in s[3] for s in said)
    assert any(s[:3] == ("root", "audit", "export") and "(Markdown)" in s[3] for s in said)
    # Reading the trail is itself on it.
    assert AuditEntry.objects.filter(actor=manager, action="export").exists()


def test_a_restricted_incident_stays_out_of_the_trail_of_who_may_not_see_it(
    client, manager, responder
):
    factories.declare(actor=responder, title="Key leaked", category=Category.SECURITY)
    factories.declare(actor=responder, title="Payments slow")
    client.force_login(manager)
    text = client.get(reverse("incidents:audit")).content.decode()
    assert "Payments slow" in text and "Key leaked" not in text
    assert not any("Key leaked" in r["summary"] for r in audit_rows(client))


def test_the_trail_is_for_managers_and_admins_only(client, responder, viewer):
    for user in (responder, viewer):
        client.force_login(user)
        assert client.get(reverse("incidents:audit")).status_code == 403
        assert client.get(reverse("incidents:audit_csv")).status_code == 403
    assert not AuditEntry.objects.exists()


def test_formula_like_text_is_kept_as_text_in_the_csv(client, manager, responder):
    incident = factories.declare(actor=responder, title="DB down")
    services.add_note(incident, '=HYPERLINK("https://evil.example","x")', actor=responder)
    client.force_login(manager)
    (note,) = [r for r in audit_rows(client) if r["action"] == "note"]
    assert note["summary"].startswith("'=HYPERLINK")


def test_the_roles_are_seeded_as_groups_with_their_defaults(runbook):
    groups = {g.name: g for g in Group.objects.prefetch_related("permissions")}
    assert set(ROLES) <= set(groups)
    perms = {name: {p.codename for p in groups[name].permissions.all()} for name in ROLES}
    assert "run_actions" in perms["Responders"] & perms["Incident commanders"]
    assert "view_auditentry" in perms["Managers"] and "change_incident" not in perms["Managers"]
    assert perms["Viewers"] == {"view_incident", "view_postmortem", "view_actionitem"}
    assert {"change_target", "change_runbookstep", "view_auditentry"} <= perms["Admins"]
    assert "view_restricted_incident" not in set().union(*perms.values())
    # An admin's edit of a role survives seeding again.
    groups["Managers"].permissions.clear()
    assert seed_runbook()["groups"] == 0
    assert not Group.objects.get(name="Managers").permissions.exists()


def test_an_existing_responders_group_gains_run_actions_by_migration(runbook):
    """Databases seeded before Responders ran actions get the permission once."""
    from django.apps import apps
    from django.contrib.auth.models import Permission

    migration = importlib.import_module("incidents.migrations.0011_responders_run_actions")
    group = Group.objects.get(name="Responders")
    group.permissions.remove(Permission.objects.get(codename="run_actions"))
    migration.grant(apps, None)
    assert group.permissions.filter(codename="run_actions").exists()
    migration.revoke(apps, None)
    assert not group.permissions.filter(codename="run_actions").exists()


def test_admin_changes_to_a_hidden_incidents_rows_stay_out_of_the_trail(
    client, manager, root, responder
):
    secret = factories.declare(actor=responder, title="Key leaked", category=Category.SECURITY)
    client.force_login(root)
    response = client.post(
        "/admin/incidents/timelineevent/add/",
        {
            "incident": secret.pk,
            "kind": "note",
            "message": "Rotated the leaked key",
            "data": "{}",
            "created_at_0": "2026-11-26",
            "created_at_1": "03:00:00",
        },
    )
    assert response.status_code == 302
    client.force_login(root)
    assert any("Rotated the leaked key" in r["summary"] for r in audit_rows(client))
    client.force_login(manager)
    assert not any("Rotated the leaked key" in r["summary"] for r in audit_rows(client))
