"""Django admin follows the restricted-incident rule: a staff responder who may not
see a restricted incident finds it in no admin list, search or change page, cannot
attach rows to it, cannot clear its flag, and cannot grant anyone access to it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission

from diagnostics.models import CheckRun, Runbook, RunbookStep
from incidents.models import ActionItem, Category, Incident, Notification, PostMortem
from tests import factories

pytestmark = pytest.mark.django_db

SECRET_TITLE = "Card data exfiltration suspected"
ADMIN_VIEWS = [
    ("incidents", "timelineevent"),
    ("incidents", "notification"),
    ("incidents", "postmortem"),
    ("incidents", "actionitem"),
    ("diagnostics", "checkrun"),
]


@pytest.fixture
def staff_responder(runbook: None) -> Any:
    """A Responder with admin access, as the security review had: staff, the
    Responders group, and permission to look at the incident-side admin pages."""
    user = factories.UserFactory(username="stella", is_staff=True)
    user.groups.add(Group.objects.get(name="Responders"))
    for app, model in ADMIN_VIEWS:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=f"view_{model}")
        )
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="incidents", codename="add_timelineevent")
    )
    return user


@pytest.fixture
def root(runbook: None) -> Any:
    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def secret(root: Any) -> Incident:
    """A security incident declared by someone else: restricted, not granted to stella."""
    incident = factories.declare(actor=root, title=SECRET_TITLE, category=Category.SECURITY)
    assert incident.restricted
    PostMortem.objects.create(incident=incident, title=f"{SECRET_TITLE} post-mortem")
    ActionItem.objects.create(incident=incident, text=f"{SECRET_TITLE}: rotate keys")
    Notification.objects.create(
        incident=incident,
        recipient_key="contact:1",
        recipient=f"{SECRET_TITLE} pager",
        channel="email",
        reason="rule",
        subject=SECRET_TITLE,
        text=SECRET_TITLE,
    )
    book = Runbook.objects.create(key="sec", title="Security", section="6", order=6)
    step = RunbookStep.objects.create(
        runbook=book, key="sec.look", title="Look", kind="diagnostic", probe="test.echo"
    )
    CheckRun.objects.create(incident=incident, step=step, summary=f"{SECRET_TITLE} check")
    return incident


@pytest.fixture
def stella(client, staff_responder):
    client.force_login(staff_responder)
    return client


def _form_data(response: Any) -> dict[str, Any]:
    """What the admin change form would post back unchanged."""
    data: dict[str, Any] = {}

    def add(form: Any) -> None:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue
            data[field.html_name] = "on" if value is True else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data


@pytest.mark.parametrize(
    "path",
    [
        "/admin/incidents/incident/",
        f"/admin/incidents/incident/?q={SECRET_TITLE.split()[0]}",
        "/admin/incidents/incident/?restricted__exact=1",
        "/admin/incidents/timelineevent/",
        f"/admin/incidents/timelineevent/?q={SECRET_TITLE.split()[0]}",
        "/admin/incidents/notification/",
        "/admin/incidents/postmortem/",
        f"/admin/incidents/postmortem/?q={SECRET_TITLE.split()[0]}",
        "/admin/incidents/actionitem/",
        "/admin/diagnostics/checkrun/",
    ],
)
def test_admin_lists_and_search_leave_out_restricted_incidents(stella, secret, path):
    response = stella.get(path)
    assert response.status_code == 200
    assert SECRET_TITLE not in response.content.decode()


def test_a_superuser_still_sees_them(client, root, secret):
    client.force_login(root)
    for path in ["/admin/incidents/incident/", "/admin/diagnostics/checkrun/"]:
        assert SECRET_TITLE in client.get(path).content.decode()


def test_direct_urls_to_a_restricted_incidents_rows_lead_nowhere(stella, secret):
    paths = [
        f"/admin/incidents/incident/{secret.pk}/change/",
        f"/admin/incidents/incident/{secret.pk}/history/",
        f"/admin/incidents/timelineevent/{secret.timeline.first().pk}/change/",
        f"/admin/incidents/postmortem/{secret.postmortem.pk}/change/",
        f"/admin/incidents/actionitem/{secret.action_items.get().pk}/change/",
        f"/admin/incidents/notification/{secret.notifications.get().pk}/change/",
        f"/admin/diagnostics/checkrun/{secret.check_runs.get().pk}/change/",
    ]
    for path in paths:
        response = stella.get(path)
        assert response.status_code in (302, 404), path
        assert SECRET_TITLE not in response.content.decode(), path
        if response.status_code == 302:
            assert response["Location"] == "/admin/"


def test_a_timeline_event_cannot_be_added_to_a_hidden_incident(stella, secret):
    before = secret.timeline.count()
    response = stella.post(
        "/admin/incidents/timelineevent/add/",
        {"incident": secret.pk, "kind": "note", "message": "planted", "data": "{}"},
    )
    assert response.status_code == 200  # the form, with its error
    assert "Select a valid choice" in response.content.decode()
    assert secret.timeline.count() == before


def test_a_staff_responder_cannot_restrict_or_clear_the_flag(stella, responder, staff_responder):
    incident = factories.declare(actor=responder)  # open, not granted to stella
    form = stella.get(f"/admin/incidents/incident/{incident.pk}/change/")
    data = _form_data(form)
    data["restricted"] = "on"
    response = stella.post(f"/admin/incidents/incident/{incident.pk}/change/", data)
    assert response.status_code == 302
    incident.refresh_from_db()
    assert not incident.restricted
    assert not incident.timeline.filter(data__has_key="restricted").exists()


def test_clearing_the_flag_in_admin_goes_through_the_service_and_the_timeline(client, root, secret):
    client.force_login(root)
    form = client.get(f"/admin/incidents/incident/{secret.pk}/change/")
    data = _form_data(form)
    data.pop("restricted")
    response = client.post(f"/admin/incidents/incident/{secret.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    secret.refresh_from_db()
    assert not secret.restricted
    event = secret.timeline.get(data__restricted=False)
    assert event.actor == root and "lifted the restriction" in event.message


@pytest.mark.parametrize(
    "suffix",
    ["permissions/", "permissions/user-manage/{user}/", "permissions/group-manage/{group}/"],
)
def test_only_superusers_reach_the_object_permission_pages(
    stella, staff_responder, responder, suffix
):
    incident = factories.declare(actor=responder)
    group = Group.objects.get(name="Responders")
    path = f"/admin/incidents/incident/{incident.pk}/" + suffix.format(
        user=staff_responder.pk, group=group.pk
    )
    assert stella.get(path).status_code == 403
    assert (
        stella.post(path, {"user": staff_responder.username, "submit_manage_user": "1"}).status_code
        == 403
    )
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    stella.force_login(root)
    assert stella.get(path).status_code == 200
