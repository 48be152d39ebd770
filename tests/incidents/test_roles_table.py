"""Separation of duties, as the README states it: the roles table's last column is
exactly what seeding grants each group, Admins work no incident, and seeding (or
migration 0018) takes working permissions away from an Admins group an older seed
or an admin gave them to."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission

from incidents.seed import ADMINS_NEVER, ROLES, seed_runbook

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"

# What works an incident (or sees every restricted one): never an Admin's.
WORKING = {
    "incidents.add_incident",
    "incidents.change_incident",
    "incidents.change_actionitem",
    "incidents.add_timelineevent",
    "incidents.change_postmortem",
    "incidents.change_checklistitem",
    "incidents.run_actions",
    "incidents.approve_actions",
    "incidents.override_recovery",
    "incidents.view_restricted_incident",
    "diagnostics.add_checkrun",
    "diagnostics.approve_actions",
}


def readme_roles() -> dict[str, set[str]]:
    """The README's roles table: group -> the permissions of its last column, written
    as `app.action[/action…] model, model…` clauses (or `app.codename`) split by ';'."""
    text = README.read_text()
    table = text[text.index("| group | may | permissions |") :].split("\n\n", 1)[0]
    roles: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        group, column = cells[0], cells[-1].strip("`")
        perms: set[str] = set()
        for clause in column.split(";"):
            head, _, models = clause.strip().partition(" ")
            app, _, actions = head.partition(".")
            if not models:
                perms.add(f"{app}.{actions}")
                continue
            for model in re.split(r",\s*", models.strip()):
                perms |= {f"{app}.{action}_{model}" for action in actions.split("/")}
        roles[group] = perms
    return roles


def seeded() -> dict[str, set[str]]:
    return {
        g.name: {f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all()}
        for g in Group.objects.prefetch_related("permissions__content_type")
    }


def test_the_readme_roles_table_is_exactly_what_seeding_grants(runbook):
    table = readme_roles()
    assert set(table) == set(ROLES)
    assert {name: set(perms) for name, perms in ROLES.items()} == table
    groups = seeded()
    assert {name: groups[name] for name in ROLES} == table


def test_seeded_admins_work_no_incident(runbook):
    admins = seeded()["Admins"]
    assert admins & WORKING == set()
    assert set(ADMINS_NEVER) >= WORKING
    assert {"incidents.view_incident", "diagnostics.change_target"} <= admins


def _give_admins_the_old_grant() -> None:
    old = ["change_incident", "change_actionitem", "add_timelineevent", "run_actions"]
    Group.objects.get(name="Admins").permissions.add(
        *Permission.objects.filter(content_type__app_label="incidents", codename__in=old)
    )


def test_seeding_again_takes_working_permissions_from_an_existing_admins_group(runbook):
    _give_admins_the_old_grant()
    assert seeded()["Admins"] & WORKING
    seed_runbook()
    assert seeded()["Admins"] & WORKING == set()
    # Everything else an admin edited stays as they left it.
    assert "incidents.change_severity" in seeded()["Admins"]


def test_migration_0018_takes_them_from_an_existing_install(runbook):
    migration = importlib.import_module("incidents.migrations.0018_admins_do_not_work_incidents")
    _give_admins_the_old_grant()
    migration.revoke(apps, None)
    assert seeded()["Admins"] & WORKING == set()
    assert "diagnostics.change_target" in seeded()["Admins"]
