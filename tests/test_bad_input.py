"""Bad input never gives a 500 and never changes anything.

Every URL the project serves (from the URL resolver), as a superuser so every
check passes and the input reaches the validation: NUL bytes, numbers above any
column's range (2^63 and beyond, which SQLite cannot even bind), dates near year
9999 and invalid UTF-8, in every form field and URL parameter. The answer is
never a 5xx, and (but for the few buttons that take no input at all) nothing in
the database changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from diagnostics.models import CheckRun, Runbook, RunbookStep
from incidents import forms as incident_forms
from incidents.models import ActionItem, Category, Severity
from incidents.paging import acklinks, regulatory
from incidents.postincident.postmortem import SECTIONS, ensure_postmortem
from tests import factories
from tests.incidents.helpers import lived
from tests.urlwalk import Route, routes

pytestmark = pytest.mark.django_db

HUGE = str(2**64 + 7)
NUL = "bad\x00value"
FAR = "9999-12-31"

# Buttons that take no input: pressing them is the change, whatever else is posted.
NO_INPUT = {
    "logout",
    "incidents:acknowledge",
    "incidents:ack_link",
    "incidents:postmortem_start",
    "incidents:evidence_verify",
    "incidents:checklist_item",
    "diagnostics:run_step",
    "diagnostics:run_all",
    "diagnostics:action_item_verify",
}
# Free text: a number (or the replacement characters invalid UTF-8 decodes to) is a
# valid note, reason or status update, so posting one there is a change, rightly.
FREE_TEXT = {
    "incidents:note",
    "incidents:status_update",
    "incidents:reopen",
    "incidents:regulatory_done",
    "diagnostics:recovery_override",  # a reason: resolves the incident (by override)
}
# The live timeline streams until SSE_MAX_DURATION; its own tests cover its input.
STREAMS = {"incidents:stream", "incidents:dashboard_stream"}


def field_names() -> set[str]:
    """Every field of every form the pages read, and the few read by hand."""
    names = {"version", "original", "events", "next", "stage", "token", "after", "edit"}
    names |= {"list", "q", "username", "password", "procedure", "target", "title"}
    names |= {"event", "milestone", "undo"}
    for form in vars(incident_forms).values():
        if isinstance(form, type) and issubclass(form, incident_forms.forms.Form):
            names |= set(form.base_fields)
    for fields in SECTIONS.values():
        names |= set(fields) | {f"original_{f}" for f in fields}
    return names


@pytest.fixture
def world(runbook: None) -> dict[str, Any]:
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    incident = lived(root, category=Category.DATABASE)
    ensure_postmortem(incident, actor=root)
    regulatory.start_clocks(incident, ["data_breach"], timezone.now())
    item = ActionItem.objects.create(incident=incident, text="Add an alert")
    book = Runbook.objects.create(key="db", title="Database", section="2", order=2)
    step = RunbookStep.objects.create(
        runbook=book, key="db.locks", title="Locks", kind="diagnostic", probe="test.echo"
    )
    run = CheckRun.objects.create(incident=incident, step=step)
    notification = incident.notifications.create(
        recipient_key="contact:1", recipient="Ana", channel="email", reason="rule", subject="s"
    )
    return {
        "root": root,
        "values": {
            "pk": incident.pk,
            "item_pk": item.pk,
            "file_pk": 1,
            "run_pk": run.pk,
            "key": step.key,
            "section": "summary",
            "flag": "data_breach",
            "token": acklinks.ack_token(notification),
            "checklist_pk": incident.checklist.first().pk,
            # the API's and approvals' names for the same objects
            "incident_id": incident.pk,
            "run_id": run.pk,
            "item_id": item.pk,
            "approval_pk": 1,
        },
    }


def our_routes() -> list[Route]:
    """The project's own pages, and the admin's add forms of its models."""
    ours = [r for r in routes() if not r.is_admin and r.name not in STREAMS]
    admin_adds = [
        r
        for r in routes()
        if r.is_admin
        and r.name.endswith("_add")
        and r.name.split(":")[1].split("_")[0] in {"incidents", "diagnostics"}
    ]
    return ours + admin_adds


def values_for(route: Route, world: dict[str, Any]) -> dict[str, Any]:
    values = dict(world["values"])
    if route.name == "incidents:checklist_item":
        values["item_pk"] = values["checklist_pk"]
    return values


def snapshot() -> dict[str, Any]:
    """Every row of our apps (and users, groups, grants), to compare before and after."""
    state: dict[str, Any] = {}
    for label in ("incidents", "diagnostics", "alerts", "api", "auth", "guardian"):
        for model in apps.get_app_config(label).get_models():
            if model._meta.label == "incidents.AuditEntry":
                continue  # reading an export is recorded, by design
            fields = [f.attname for f in model._meta.concrete_fields if f.name != "last_login"]
            state[model._meta.label] = sorted(map(repr, model.objects.values_list(*fields)))
    return state


def _answers(client, method: str, url: str, **kwargs: Any) -> int:
    client.raise_request_exception = False  # a 500 is an answer to count, not a crash
    response = getattr(client, method)(url, **kwargs)
    if url.split("?")[0] == "/healthz" and response.status_code == 503:
        return 200  # "a dependency is down" (no broker here) is the page's answer, not a crash
    return response.status_code


@pytest.mark.parametrize("bad", [NUL, HUGE, FAR, "-" + HUGE], ids=["nul", "huge", "far", "neg"])
def test_bad_values_in_every_field_never_give_a_5xx_nor_change_anything(client, world, bad):
    data = dict.fromkeys(field_names(), bad)
    data["events"] = [bad, bad]
    failures = []
    for route in our_routes():
        url = route.url(values_for(route, world))
        before = snapshot()
        for method, kwargs in (("get", {"data": data}), ("post", {"data": data})):
            client.force_login(world["root"])
            status = _answers(client, method, url, **kwargs)
            if status >= 500:
                failures.append(f"{method.upper()} {route.name} {bad!r}: {status}")
        expected = NO_INPUT | (FREE_TEXT if bad != NUL else set())
        if bad != FAR and route.name not in expected and snapshot() != before:
            failures.append(f"POST {route.name} {bad!r} changed the database")
    assert failures == []


@pytest.mark.parametrize("bad", ["%00", "a%00b", HUGE, str(2**63), "%FF%FE"])
def test_bad_url_parameters_never_give_a_5xx(client, world, bad):
    failures = []
    for route in our_routes():
        for name in route.params:
            values = values_for(route, world) | {name: bad}
            url = route.url(values)
            for method in ("get", "post"):
                client.force_login(world["root"])
                status = _answers(client, method, url)
                if status >= 500:
                    failures.append(f"{method.upper()} {url}: {status}")
    assert failures == []


def test_invalid_utf8_bodies_and_query_strings_never_give_a_5xx(client, world):
    body = "&".join(f"{name}=%FF%FE%C0" for name in sorted(field_names())).encode()
    failures = []
    for route in our_routes():
        url = route.url(values_for(route, world))
        before = snapshot()
        client.force_login(world["root"])
        client.raise_request_exception = False
        status = client.generic(
            "POST", url, body, content_type="application/x-www-form-urlencoded"
        ).status_code
        client.force_login(world["root"])
        status_get = _answers(client, "get", url + "?start=%FF&end=%C0&severity=%FE&title=%FF")
        if max(status, status_get) >= 500:
            failures.append(f"{route.name}: {status} {status_get}")
        if route.name not in NO_INPUT | FREE_TEXT and snapshot() != before:
            failures.append(f"POST {route.name} changed the database")
    assert failures == []


@pytest.mark.parametrize(
    "name", ["incidents:reports", "incidents:reports_csv", "incidents:reports_pdf"]
)
@pytest.mark.parametrize(
    "period",
    [("9999-12-01", FAR), ("9999-12-31", FAR), ("0001-01-01", "0001-01-02"), ("2026-01-01", FAR)],
)
def test_report_periods_near_the_calendars_ends_get_a_clear_refusal(client, world, name, period):
    client.force_login(world["root"])
    client.raise_request_exception = False
    response = client.get(reverse(name), {"start": period[0], "end": period[1]})
    assert response.status_code in (200, 400, 422)
    if name == "incidents:reports" and period[0] != "2026-01-01":
        assert "Choose dates between 2000-01-01 and 2999-12-31" in response.content.decode()


def test_affected_users_above_the_columns_range_is_refused_with_a_message(client, world):
    client.force_login(world["root"])
    before = snapshot()
    response = client.post(
        reverse("incidents:declare"),
        {"title": "Outage", "category": "outage", "severity": 1, "affected_users": 2**31},
    )
    assert response.status_code == 422
    assert "less than or equal to 2147483647" in response.content.decode()
    assert snapshot() == before


def test_an_empty_worker_heartbeat_form_is_not_a_500(client, world):
    client.force_login(world["root"])
    client.raise_request_exception = False
    before = snapshot()
    response = client.post("/admin/diagnostics/workerheartbeat/add/", {})
    assert response.status_code == 403  # workers write heartbeats, nobody adds one by hand
    assert snapshot() == before


def declare_data() -> dict[str, Any]:
    """A declaration the form accepts (checked below), to spoil one field at a time."""
    return {
        "title": "Outage",
        "category": "database",
        "severity": Severity.objects.get(key="P2").pk,
    }


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("impacted_services", "lotolink-backend, st\x00ripe", "Null characters are not allowed"),
        ("impacted_services", "s" * 101, "at most 100 characters"),
        ("impacted_services", ", ".join(f"s{i}" for i in range(51)), "at most 50 services"),
        ("summary", "x" * 10_001, "at most 10000 characters"),
    ],
    ids=["nul-service", "service-101", "services-51", "summary-10001"],
)
def test_the_declare_form_keeps_the_apis_limits(client, world, field, value, says):
    """The same limits as POST /api/v1/incidents (incidents.rules.inbound)."""
    client.force_login(world["root"])
    before = snapshot()
    response = client.post(reverse("incidents:declare"), declare_data() | {field: value})
    assert response.status_code == 422
    assert says in response.content.decode()
    assert snapshot() == before
    assert incident_forms.DeclareForm(declare_data()).is_valid()
