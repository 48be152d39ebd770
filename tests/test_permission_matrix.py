"""The permission matrix: every URL the project serves (from the URL resolver), as
each role, GET and POST, on an ordinary incident, on a restricted one, and with the
id of another incident's object (IDOR), and the answer each must get.

A URL without a rule in RULES (or ADMIN_RULES) fails the test: a new page must say
who may reach it. Answers are classes, asserted on status and redirect target:
  LOGIN   302 to the login page (anonymous)
  HIDDEN  404: the object is not theirs to know of
  DENIED  403
  NOT_ALLOWED 405: the method is not served
  OK      the view served them (2xx, a redirect that is not to a login page, or a
          4xx of the form's own validation: 400, 409, 410, 422)
  REFUSED the view's own refusal as a redirect back to the incident (no permission
          for that button)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import assign_perm

from diagnostics.models import CheckRun, RunbookStep
from diagnostics.seed import seed_runbooks
from incidents import evidence
from incidents.models import ActionItem, Category
from incidents.paging import acklinks, regulatory
from incidents.postincident.postmortem import ensure_postmortem
from tests import factories
from tests.incidents.helpers import lived
from tests.urlwalk import Route, routes

pytestmark = pytest.mark.django_db

UNAUTH = "UNAUTH"  # 401: no valid bearer token
LOGIN, HIDDEN, DENIED, NOT_ALLOWED, OK, REFUSED = (
    "LOGIN",
    "HIDDEN",
    "DENIED",
    "NOT_ALLOWED",
    "OK",
    "REFUSED",
)
ROLES = [
    "anonymous",
    "noperm",
    "viewer",
    "responder",
    "commander",
    "manager",
    "granted",
    "staff",
    "superuser",
]


@dataclass(frozen=True)
class Who:
    """What a role may do, as the README's Roles section documents it."""

    role: str
    logged_in: bool = True
    sees_secret: bool = False  # the restricted incident
    works: bool = False  # change any incident (Responders, Commanders; never Admins)
    works_secret: bool = False  # granted change on the restricted incident
    declares: bool = False
    actions: bool = False  # run resolution actions
    overrides: bool = False  # resolve despite failing recovery checks (with a reason)
    audit: bool = False  # the audit trail
    staff: bool = False


WHO = {
    "anonymous": Who("anonymous", logged_in=False),
    "noperm": Who("noperm"),
    "viewer": Who("viewer"),
    "responder": Who("responder", works=True, declares=True, actions=True),
    "commander": Who("commander", works=True, declares=True, actions=True, overrides=True),
    "manager": Who("manager", audit=True),
    "granted": Who("granted", sees_secret=True, works_secret=True),
    # Admins maintain configuration and work no incident (separation of duties).
    "staff": Who("staff", audit=True, staff=True),
    "superuser": Who(
        "superuser",
        sees_secret=True,
        works=True,
        works_secret=True,
        declares=True,
        actions=True,
        overrides=True,
        audit=True,
        staff=True,
    ),
}

# --- what each kind of page asks of its user ------------------------------------------

Rule = Callable[[Who, str], str]  # (who, target: "open" | "secret" | "idor") -> answer


def public(who: Who, target: str) -> str:
    return OK


def user(who: Who, target: str) -> str:
    return OK if who.logged_in else LOGIN


def see(who: Who, target: str) -> str:
    if not who.logged_in:
        return LOGIN
    if target == "secret" and not who.sees_secret:
        return HIDDEN
    return HIDDEN if target == "idor" else OK


def work(who: Who, target: str) -> str:
    if target == "idor":  # refused on the incident itself first, then the object is unknown
        answer = work(who, "open")
        return answer if answer != OK else HIDDEN
    answer = see(who, target)
    if answer != OK:
        return answer
    allowed = who.works or (target == "secret" and who.works_secret)
    return OK if allowed else DENIED


def actions(who: Who, target: str) -> str:
    answer = work(who, target)
    return answer if answer != OK else (OK if who.actions else REFUSED)


def overrides(who: Who, target: str) -> str:
    answer = work(who, target)
    return answer if answer != OK else (OK if who.overrides else REFUSED)


# Evidence (database dumps, log exports) has its own permissions on top of seeing the
# incident (README, Roles): both for Responders and Incident commanders, verify only
# for Managers; neither for Viewers, Admins, users with no group or a per-incident
# grant of view and change alone.
EVIDENCE = {
    "download": {"responder", "commander", "superuser"},
    "verify": {"responder", "commander", "manager", "superuser"},
}


def evidence_rule(what: str) -> Rule:
    def rule(who: Who, target: str) -> str:
        if target == "idor":  # refused on the incident itself first, then the file is unknown
            answer = rule(who, "open")
            return answer if answer != OK else HIDDEN
        answer = see(who, target)
        if answer != OK:
            return answer
        return OK if who.role in EVIDENCE[what] else DENIED

    return rule


def declare(who: Who, target: str) -> str:
    return LOGIN if not who.logged_in else (OK if who.declares else DENIED)


def audit(who: Who, target: str) -> str:
    return LOGIN if not who.logged_in else (OK if who.audit else DENIED)


def none(who: Who, target: str) -> str:
    return LOGIN if not who.logged_in else NOT_ALLOWED


def never(who: Who, target: str) -> str:
    return NOT_ALLOWED  # a page without login that serves GET only


def to_login(who: Who, target: str) -> str:
    return LOGIN  # logging out lands on the login page


def token(who: Who, target: str) -> str:
    """The API and the alert receiver take a bearer token, never a session: a
    logged-in browser's cookies get 401 like anyone else (no CSRF surface)."""
    return UNAUTH


def off(who: Who, target: str) -> str:
    return HIDDEN  # /metrics without METRICS_TOKEN set: off for everyone


def see_missing(who: Who, target: str) -> str:
    """A decision on an approval that does not exist (or is another incident's)."""
    return LOGIN if not who.logged_in else HIDDEN


def signed(who: Who, target: str) -> str:
    return OK  # the Stripe hook: no login; an unsigned body is refused as bad input (400)


# route name -> (GET rule, POST rule)
RULES: dict[str, tuple[Rule, Rule]] = {
    "healthz": (public, never),
    "readyz": (public, never),
    "login": (public, public),
    "logout": (none, to_login),
    "incidents:dashboard": (user, none),
    "incidents:dashboard_stream": (user, none),
    "incidents:declare": (declare, declare),
    "incidents:channel_preview": (user, none),
    "incidents:detail": (see, none),
    "incidents:timeline_page": (see, none),
    "incidents:stream": (see, none),
    "incidents:acknowledge": (none, work),
    "incidents:transition": (none, work),
    "incidents:reopen": (none, work),
    "incidents:severity": (none, work),
    "incidents:commander": (none, work),
    "incidents:note": (none, work),
    "incidents:milestone": (none, work),
    "incidents:status_update": (none, work),
    "incidents:checklist_item": (none, work),
    "incidents:flags": (none, work),
    "incidents:whos_told": (see, none),
    "incidents:regulatory_done": (none, work),
    "incidents:ack_link": (work, work),
    "incidents:evidence_download": (evidence_rule("download"), none),
    "incidents:evidence_verify": (none, evidence_rule("verify")),
    "incidents:postmortem": (see, none),
    "incidents:postmortem_start": (none, work),
    "incidents:postmortem_timeline": (none, work),
    "incidents:postmortem_section": (see, work),
    "incidents:action_item_add": (none, work),
    "incidents:action_item": (see, work),
    "incidents:export_md": (see, none),
    "incidents:export_pdf": (see, none),
    "incidents:action_items": (user, none),
    "incidents:reports": (user, none),
    "incidents:reports_csv": (user, none),
    "incidents:reports_pdf": (user, none),
    "incidents:profile": (user, user),
    "incidents:audit": (audit, none),
    "incidents:audit_csv": (audit, none),
    "diagnostics:run_step": (none, work),
    "diagnostics:action": (actions, actions),
    "diagnostics:run_all": (none, work),
    "diagnostics:procedure": (see, none),
    "diagnostics:run_output": (see, none),
    "diagnostics:action_item_verify": (none, work),
    "diagnostics:approve": (none, see_missing),
    "diagnostics:reject": (none, see_missing),
    "diagnostics:recovery_override": (none, overrides),
    "metrics": (off, never),
    "alerts:alertmanager": (never, token),
    "alerts:stripe": (never, signed),
    "api:api-root": (off, off),
    "api:openapi-json": (user, user),  # the schema, whatever the method: behind the login
    "api:openapi-view": (user, user),
    "api:list_incidents": (token, token),
    "api:declare": (token, token),
    "api:incident_detail": (token, never),
    "api:acknowledge": (never, token),
    "api:transition": (never, token),
    "api:add_note": (never, token),
    "api:post_status_update": (never, token),
    "api:timeline": (token, never),
    "api:list_check_runs": (token, token),
    "api:request_diagnostic": (token, token),
    "api:check_run": (token, never),
    "api:postmortem": (token, never),
    "api:save_postmortem_section": (never, never),  # PUT
    "api:action_items": (token, token),
    "api:add_item": (token, token),
    "api:update_item": (never, never),  # PATCH
}

# The live stream does its database work on pooled connections of its own (it holds
# none while it waits), which a test inside one transaction cannot share: its rule is
# asserted against a live server with committed data in tests/incidents/test_stream.py
# (login, 404 for who may not see it) and test_stream_scale.py (access revoked, logout);
# the dashboard's in tests/incidents/test_dashboard_live.py (login, logout).
LIVE_SERVER_ONLY = {"incidents:stream", "incidents:dashboard_stream"}

# Routes whose ids name an object inside the incident: with the other incident's
# object they must answer 404 (IDOR), whoever asks.
SUB_OBJECTS = {"item_pk", "file_pk", "run_pk"}

# --- Django admin ---------------------------------------------------------------------
# Staff in the Admins group: what they may open, per model (the README's Roles).
STAFF_MODELS = {
    "incidents": {
        "severity": "acdv",
        "escalationcontact": "acdv",
        "checklisttemplate": "acdv",
        "rotation": "acdv",
        "incident": "v",
        "actionitem": "v",
        "timelineevent": "v",
        "notification": "v",
        "postmortem": "v",
    },
    "diagnostics": {
        "target": "acdv",
        "runbook": "acdv",
        "runbookstep": "acdv",
        "checkrun": "v",
        "workerheartbeat": "v",
        "recoveryverification": "v",
    },
}
NEVER_ADDED = {
    "incident",
    "notification",
    "checkrun",
    "workerheartbeat",
    "accessattempt",
    "accesslog",
    "accessfailurelog",
    "actionapproval",  # made from the incident page, decided there
    "recoveryverification",  # made by "Mark resolved", moved by its checks
    "alertgroup",  # made by Alertmanager's deliveries
    "alert",
    "delivery",
    "stripeevent",
}
NEVER_DELETED = {"timelineevent"}


def admin_answer(route: Route, who: Who, target: str) -> str:
    """Django admin: staff only (others go to the admin login), then model permissions;
    a restricted incident's rows are hidden (a redirect to the admin index)."""
    name = route.name.removeprefix("admin:")
    if name == "login":  # the admin's own login form, or home for staff already in
        return "ADMIN_HOME" if who.staff else OK
    if name == "logout":  # POST only; others are sent home (the admin's login)
        return NOT_ALLOWED if who.staff else ("ADMIN_HOME" if who.logged_in else "ADMIN_LOGIN")
    site_views = {"index", "password_change", "password_change_done", "jsi18n", "autocomplete"}
    if (
        not who.logged_in
        and name not in site_views | {"view_on_site"}
        and "(?P" not in route.pattern
    ):
        return LOGIN  # a model's pages: the site's login comes first
    if not who.staff:
        return "ADMIN_LOGIN"
    if name in site_views - {"autocomplete"}:
        return OK
    if name == "autocomplete":
        return DENIED  # no model named: PermissionDenied
    if name == "view_on_site" or route.name == route.pattern or "(?P" in route.pattern:
        return "ANY"  # redirects and app lists, asserted only not to fail
    app, _, rest = name.partition("_")
    model, _, view = rest.rpartition("_")
    if name.startswith("incidents_incident_permissions"):
        if who.role != "superuser":
            return DENIED
        return HIDDEN if target == "missing" else OK
    hidden = target == "missing" or (target == "secret" and not who.sees_secret)
    if view == "history" and hidden:
        return "ADMIN_HOME"  # Django looks the object up before the permission here
    allowed = "acdv" if who.role == "superuser" else STAFF_MODELS.get(app, {}).get(model, "")
    letter = {"changelist": "v", "add": "a", "change": "v", "delete": "d", "history": "v"}[view]
    if (view == "add" and model in NEVER_ADDED) or (view == "delete" and model in NEVER_DELETED):
        return DENIED
    if letter not in allowed:
        return DENIED
    if hidden and view in {"change", "delete"}:
        return "ADMIN_HOME"  # "doesn't exist": hidden or really missing
    return OK


# --- the world ------------------------------------------------------------------------


@pytest.fixture
def world(runbook: None, settings, tmp_path) -> dict[str, Any]:
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""
    seed_runbooks()
    groups = {g.name: g for g in Group.objects.all()}
    users: dict[str, Any] = {}
    for role, group in [
        ("noperm", None),
        ("viewer", "Viewers"),
        ("responder", "Responders"),
        ("commander", "Incident commanders"),
        ("manager", "Managers"),
        ("granted", None),
        ("staff", "Admins"),
    ]:
        users[role] = factories.UserFactory(username=role, is_staff=role == "staff")
        if group:
            users[role].groups.add(groups[group])
    users["superuser"] = factories.UserFactory(
        username="superuser", is_staff=True, is_superuser=True
    )
    owner = factories.UserFactory(username="owner", is_superuser=True)
    incidents = {
        "open": lived(owner, title="Payments slow", category=Category.DATABASE),
        "secret": lived(owner, title="Key leaked", category=Category.SECURITY, severity="P0"),
    }
    for perm in ("incidents.view_incident", "incidents.change_incident"):
        assign_perm(perm, users["granted"], incidents["secret"])
    action_step = next(s for s in RunbookStep.objects.filter(kind="action") if s.available)
    objects: dict[str, dict[str, Any]] = {}
    for name, incident in incidents.items():
        ensure_postmortem(incident, actor=owner)
        regulatory.start_clocks(incident, ["data_breach"], timezone.now())
        source = tmp_path / f"{name}.log"
        source.write_text("log line\n")
        objects[name] = {
            "pk": incident.pk,
            "item_pk": ActionItem.objects.create(incident=incident, text="Add an alert").pk,
            "checklist_pk": incident.checklist.first().pk,
            "file_pk": evidence.store_file(
                incident,
                name="app.log",
                source_path=source,
                content_type="text/plain",
                actor=owner,
            ).pk,
            "run_pk": CheckRun.objects.create(
                incident=incident, step=RunbookStep.objects.filter(kind="diagnostic").first()
            ).pk,
            "token": acklinks.ack_token(
                incident.notifications.create(
                    recipient_key="contact:1",
                    recipient="Ana",
                    channel="email",
                    reason="rule",
                    subject="s",
                )
            ),
            "key": action_step.key,
            "incident_id": incident.pk,
            "run_id": 0,  # filled below
            "item_id": 0,
            "approval_pk": 987654,  # none exists: a decision on it is 404 for all
            "section": "summary",
            "flag": "data_breach",
            "object_id": incident.pk,
            "object_pk": incident.pk,
            "user_id": users["viewer"].pk,
            "group_id": groups["Viewers"].pk,
            "id": users["viewer"].pk,
            "content_type_id": 1,
            "app_label": "incidents",
            "url": "nowhere/",
        }
    for found in objects.values():
        found["run_id"], found["item_id"] = found["run_pk"], found["item_pk"]
    # The other incident's objects, for IDOR: the open incident's URL, the secret's ids.
    objects["idor"] = objects["open"] | {k: objects["secret"][k] for k in SUB_OBJECTS}
    objects["idor"]["checklist_pk"] = objects["secret"]["checklist_pk"]
    objects["missing"] = objects["open"] | {"object_id": 987654, "object_pk": 987654}
    return {"users": users, "objects": objects}


def values(route: Route, world: dict[str, Any], target: str) -> dict[str, Any]:
    found = dict(world["objects"][target])
    if route.name == "incidents:checklist_item":
        found["item_pk"] = found["checklist_pk"]
    if route.name in {"diagnostics:run_all", "diagnostics:procedure"}:
        found["key"] = RunbookStep.objects.get(key=found["key"]).runbook.key
    if route.name == "diagnostics:run_step":
        found["key"] = RunbookStep.objects.filter(kind="diagnostic").first().key
    return found


def classify(response: Any, *, admin: bool = False) -> str:
    status = response.status_code
    location = response.get("Location", "")
    if status == 302 and location.startswith("/login/"):
        return LOGIN
    if status == 302 and location.startswith("/admin/login/"):
        return "ADMIN_LOGIN"
    if admin and status == 302 and location == "/admin/":
        return "ADMIN_HOME"
    if status == 302 and "/incidents/" in location and not admin and response.refused:
        return REFUSED
    return {401: UNAUTH, 404: HIDDEN, 403: DENIED, 405: NOT_ALLOWED}.get(
        status, OK if status < 500 else f"ERROR {status}"
    )


def ask(client: Client, who: Who, world: dict[str, Any], method: str, url: str) -> Any:
    client.logout()
    if who.logged_in:
        client.force_login(world["users"][who.role])
    response = getattr(client, method)(url, {})
    # A button's refusal comes back as a redirect to the incident with an error message.
    request = getattr(response, "wsgi_request", None)
    messages = [str(m) for m in get_messages(request)] if request is not None else []
    response.refused = any("may not" in m for m in messages)
    return response


def test_every_route_has_a_rule():
    names = {r.name for r in routes() if not r.is_admin}
    assert names - set(RULES) == set(), "a new URL needs a rule in RULES"
    assert set(RULES) - names == set(), "a rule for a URL that no longer exists"


@pytest.mark.parametrize("role", ROLES)
def test_the_projects_pages_answer_each_role_as_the_rules_say(client, world, role, settings):
    settings.SSE_MAX_DURATION = 0.01
    client.raise_request_exception = False
    who = WHO[role]
    wrong = []
    for route in routes():
        if route.is_admin:
            continue
        if route.name in LIVE_SERVER_ONLY and who.logged_in:
            continue  # see LIVE_SERVER_ONLY
        targets = ["open", "secret"]
        if set(route.params) & (SUB_OBJECTS | {"item_pk"}):
            targets.append("idor")
        if "pk" not in route.params and "token" not in route.params:
            targets = ["open"]
        get_rule, post_rule = RULES[route.name]
        for target in targets:
            url = route.url(values(route, world, target))
            for method, rule in (("get", get_rule), ("post", post_rule)):
                expected = rule(who, target)
                if route.name == "incidents:ack_link" and target == "idor":
                    continue  # a token names its own incident: no other id to mix in
                answer = classify(ask(client, who, world, method, url))
                if answer != expected:
                    wrong.append(f"{method.upper()} {url} ({target}): {answer}, want {expected}")
    assert wrong == []


@pytest.mark.parametrize("role", ROLES)
def test_django_admin_answers_each_role_as_the_rules_say(client, world, role):
    client.raise_request_exception = False
    who = WHO[role]
    wrong = []
    for route in routes():
        if not route.is_admin:
            continue
        targets = ["open"]
        if route.params.keys() & {"object_id", "object_pk"} and "_incident_" in route.name:
            targets = ["open", "secret", "missing"]
        elif "object_id" in route.params:
            targets = ["missing"]
        for target in targets:
            url = route.url(values(route, world, target))
            expected = admin_answer(route, who, target)
            answer = classify(ask(client, who, world, "get", url), admin=True)
            if expected == "ANY":
                if answer.startswith("ERROR"):
                    wrong.append(f"GET {url}: {answer}")
                continue
            if answer != expected:
                wrong.append(f"GET {url} ({target}): {answer}, want {expected}")
    assert wrong == []


def test_a_new_url_without_a_rule_fails_the_matrix(monkeypatch):
    from tests import urlwalk

    real = urlwalk.routes
    monkeypatch.setattr(
        "tests.test_permission_matrix.routes",
        lambda: [*real(), Route("incidents:brand_new", "incidents/<int:pk>/brand-new/")],
    )
    with pytest.raises(AssertionError, match="a new URL needs a rule"):
        test_every_route_has_a_rule()
