"""Every page and action: allowed user, user without access, HTMX and plain
requests, and bad input (a clear error, nothing changed)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from incidents import services
from incidents.models import EventKind, Incident, Severity, Status
from incidents.rules import inbound
from tests import factories

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def secret(responder):
    """A restricted (security) incident that only its declarer may see."""
    return factories.declare(actor=responder, category="security", title="Credential leak")


def url(name: str, incident: Incident, **extra: int) -> str:
    return reverse(f"incidents:{name}", kwargs={"pk": incident.pk, **extra})


# --- login and access --------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/incidents/declare/", "/incidents/1/", "/admin/"])
def test_every_page_needs_login(client, runbook, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_logging_in_and_out(client, responder):
    response = client.post("/login/", {"username": "ana", "password": factories.PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_refused_clearly(client, responder):
    response = client.post("/login/", {"username": "ana", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


def test_a_restricted_incident_is_invisible_without_access(client, secret, other_responder):
    client.force_login(other_responder)
    assert client.get(url("detail", secret)).status_code == 404
    assert client.get(url("timeline_page", secret) + "?before=999").status_code == 404
    assert client.post(url("acknowledge", secret)).status_code == 404
    assert b"Credential leak" not in client.get("/").content
    secret.refresh_from_db()
    assert secret.status == Status.DECLARED


def test_a_granted_user_sees_the_restricted_incident(client, secret, other_responder):
    from guardian.shortcuts import assign_perm

    assign_perm("incidents.view_incident", other_responder, secret)
    client.force_login(other_responder)
    assert client.get(url("detail", secret)).status_code == 200
    assert b"Credential leak" in client.get("/").content


def test_a_viewer_may_read_but_not_act(client, incident, viewer):
    client.force_login(viewer)
    page = client.get(url("detail", incident))
    assert page.status_code == 200
    assert b'id="acknowledge"' not in page.content
    assert client.post(url("acknowledge", incident)).status_code == 403
    assert client.post(url("note", incident), {"text": "hi"}).status_code == 403
    assert client.get("/incidents/declare/").status_code == 403
    incident.refresh_from_db()
    assert incident.status == Status.DECLARED
    assert incident.timeline.count() == 1


def test_an_unknown_incident_is_404(responder_client, runbook):
    assert responder_client.get("/incidents/9999/").status_code == 404
    assert responder_client.post("/incidents/9999/acknowledge/").status_code == 404


@pytest.mark.parametrize(
    "name",
    ["acknowledge", "transition", "reopen", "severity", "commander", "note", "status_update"],
)
def test_actions_refuse_get(responder_client, incident, name):
    assert responder_client.get(url(name, incident)).status_code == 405


# --- dashboard ---------------------------------------------------------------


def test_the_dashboard_lists_open_incidents_with_their_sla(responder_client, responder):
    open_one = factories.declare(actor=responder, title="Checkout errors")
    done = factories.declare(actor=responder, title="Old banca outage", severity="P2")
    services.acknowledge_incident(done, actor=responder)
    services.transition_incident(done, Status.RESOLVED, actor=responder)
    page = responder_client.get("/")
    assert page.status_code == 200
    open_ids = [i.pk for i in page.context["open_incidents"]]
    assert open_ids == [open_one.pk]
    assert [i.pk for i in page.context["recent_closed"]] == [done.pk]
    assert b"left to acknowledge" in page.content
    assert b'data-seconds-left="' in page.content  # the browser counts down from it


def test_breached_incidents_stand_out(responder_client, responder):
    from datetime import timedelta

    from django.utils import timezone

    factories.declare(actor=responder, now=timezone.now() - timedelta(hours=1))
    page = responder_client.get("/")
    assert b"breached-row" in page.content
    assert b"SLA breached" in page.content


def test_dashboard_filters_and_its_htmx_partial(responder_client, responder):
    factories.declare(actor=responder, title="DB slow", category="database", severity="P2")
    factories.declare(actor=responder, title="Pay down", severity="P0")
    p2 = Severity.objects.get(key="P2").pk
    page = responder_client.get(f"/?severity={p2}&category=database", **HX)
    assert page.status_code == 200
    assert b"<html" not in page.content  # only the list partial
    assert b'id="incident-list"' in page.content
    assert b"DB slow" in page.content and b"Pay down" not in page.content


def test_bad_dashboard_filters_are_ignored_not_a_500(responder_client, incident):
    page = responder_client.get("/?severity=abc&status=exploded")
    assert page.status_code == 200
    assert b"Select a valid choice" in page.content or page.context["form"].errors


# --- declare -----------------------------------------------------------------


def test_declaring_from_the_form(responder_client):
    p0 = Severity.objects.get(key="P0")
    response = responder_client.post(
        "/incidents/declare/",
        {
            "title": "Stripe webhooks failing",
            "category": "payment",
            "severity": p0.pk,
            "impacted_services": "lotolink-backend, stripe, ",
            "affected_users": "250",
        },
    )
    incident = Incident.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/incidents/{incident.pk}/"
    assert incident.impacted_services == ["lotolink-backend", "stripe"]
    assert incident.affected_users == 250
    page = responder_client.get(response["Location"])
    assert incident.channel_name.encode() in page.content
    assert b"Determine number of affected users" in page.content


def test_the_declare_form_shows_the_initial_checklist(responder_client):
    page = responder_client.get("/incidents/declare/")
    assert page.status_code == 200
    assert b"Assess severity" in page.content
    assert b"Review recent deployments" in page.content


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"title": "", "category": "payment"}, b"This field is required"),
        ({"title": "!!!", "category": "payment"}, b"at least one letter or digit"),
        ({"title": "x", "category": "volcano"}, b"Select a valid choice"),
        ({"title": "x", "category": "payment", "affected_users": "-3"}, b"greater than or equal"),
        ({"title": "x" * 201, "category": "payment"}, b"at most 200 characters"),
        ({"title": "x", "category": "payment", "severity": "999"}, b"Select a valid choice"),
    ],
)
def test_bad_declarations_are_refused_clearly(responder_client, data, error):
    data.setdefault("severity", Severity.objects.get(key="P1").pk)
    response = responder_client.post("/incidents/declare/", data)
    assert response.status_code == 422
    assert error in response.content
    assert not Incident.objects.exists()


def test_the_channel_name_preview(responder_client):
    response = responder_client.get("/incidents/channel-name/?title=Banca+Central+down", **HX)
    assert response.status_code == 200
    assert b"-banca-central-down</code>" in response.content
    assert b"<html" not in response.content


# --- incident page and actions -----------------------------------------------


def test_the_incident_page(responder_client, incident):
    page = responder_client.get(url("detail", incident))
    assert page.status_code == 200
    content = page.content.decode()
    assert f'sse-connect="/incidents/{incident.pk}/stream/?after=' in content
    assert 'id="acknowledge"' in content
    assert incident.channel_name in content


def test_acknowledge_plain_post_redirects(responder_client, incident):
    response = responder_client.post(url("acknowledge", incident))
    assert response.status_code == 302 and response["Location"] == url("detail", incident)
    incident.refresh_from_db()
    assert incident.status == Status.ACKNOWLEDGED


def test_acknowledge_by_htmx_returns_the_fresh_header(responder_client, incident):
    response = responder_client.post(url("acknowledge", incident), **HX)
    assert response.status_code == 200
    assert response.content.lstrip().startswith(b'<section id="incident-header"') or (
        b'id="incident-header"' in response.content and b"<html" not in response.content
    )
    assert b"Acknowledged" in response.content
    # "Mark" is hidden on a phone's narrow header; the button is there, named in full.
    assert b'<span class="verb">Mark </span>investigating</button>' in response.content


def test_a_second_acknowledge_says_so(responder_client, incident, other_responder):
    services.acknowledge_incident(incident, actor=other_responder)
    response = responder_client.post(url("acknowledge", incident), **HX)
    assert response.status_code == 422
    assert response["HX-Retarget"] == "#flash"
    assert b"already acknowledged by ben" in response.content
    plain = responder_client.post(url("acknowledge", incident), follow=True)
    assert b"already acknowledged by ben" in plain.content


def test_a_refusal_lands_in_the_message_slot_of_the_control_pressed(
    responder_client, incident, other_responder
):
    services.acknowledge_incident(incident, actor=other_responder)
    slot = {"HTTP_X_MESSAGE_SLOT": "header-msg"}
    response = responder_client.post(url("acknowledge", incident), **HX, **slot)
    assert response.status_code == 422
    assert response["HX-Retarget"] == "#header-msg"
    assert b"already acknowledged by ben" in response.content
    # A slot that is not a plain element id is ignored: the page's flash area instead.
    bad = {"HTTP_X_MESSAGE_SLOT": "#x, body"}
    response = responder_client.post(url("acknowledge", incident), **HX, **bad)
    assert response["HX-Retarget"] == "#flash"


def test_transitions_from_the_page(responder_client, incident, responder):
    services.acknowledge_incident(incident, actor=responder)
    responder_client.post(
        url("transition", incident), {"status": "mitigated", "note": "rolled back"}
    )
    incident.refresh_from_db()
    assert incident.status == Status.MITIGATED
    assert incident.timeline.last().message.endswith(": rolled back")


@pytest.mark.parametrize(
    ("status", "error"), [("closed", b"cannot move to closed"), ("lava", b"Select a valid choice")]
)
def test_bad_transitions_change_nothing(responder_client, incident, responder, status, error):
    services.acknowledge_incident(incident, actor=responder)
    response = responder_client.post(url("transition", incident), {"status": status}, **HX)
    assert response.status_code == 422
    assert error in response.content
    incident.refresh_from_db()
    assert incident.status == Status.ACKNOWLEDGED


def test_reopen_needs_a_reason(responder_client, incident, responder):
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.RESOLVED, actor=responder)
    response = responder_client.post(url("reopen", incident), {"reason": ""}, **HX)
    assert response.status_code == 422 and b"Reason: This field is required" in response.content
    responder_client.post(url("reopen", incident), {"reason": "errors are back"}, **HX)
    incident.refresh_from_db()
    assert incident.status == Status.INVESTIGATING


def test_change_severity_from_the_page(responder_client, incident):
    p0 = Severity.objects.get(key="P0")
    bad = responder_client.post(url("severity", incident), {"severity": p0.pk, "reason": ""}, **HX)
    assert bad.status_code == 422
    incident.refresh_from_db()
    assert incident.severity.key == "P1"
    ok = responder_client.post(
        url("severity", incident), {"severity": p0.pk, "reason": "worse"}, **HX
    )
    assert ok.status_code == 200
    incident.refresh_from_db()
    assert incident.severity.key == "P0"


def test_assign_commander_from_the_page(responder_client, incident, other_responder):
    response = responder_client.post(url("commander", incident), {"commander": other_responder.pk})
    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.commander == other_responder
    bad = responder_client.post(url("commander", incident), {"commander": 424242}, **HX)
    assert bad.status_code == 422
    incident.refresh_from_db()
    assert incident.commander == other_responder


@pytest.mark.parametrize(
    ("name", "kind"), [("note", EventKind.NOTE), ("status_update", EventKind.STATUS_UPDATE)]
)
def test_notes_and_status_updates_from_the_page(responder_client, incident, name, kind):
    assert responder_client.post(url(name, incident), {"text": "   "}, **HX).status_code == 422
    too_long = {"text": "x" * (inbound.MAX_TEXT + 1)}  # the API's limit too
    assert responder_client.post(url(name, incident), too_long, **HX).status_code == 422
    assert incident.timeline.count() == 1
    response = responder_client.post(url(name, incident), {"text": "Rolling back"}, **HX)
    assert response.status_code == 200
    assert incident.timeline.last().kind == kind
    plain = responder_client.post(url(name, incident), {"text": "again"})
    assert plain.status_code == 302


def test_ticking_a_checklist_item(responder_client, incident):
    item = incident.checklist.get(text="Identify impacted services")
    response = responder_client.post(
        url("checklist_item", incident, item_pk=item.pk), {"done": "on"}, **HX
    )
    assert response.status_code == 200
    assert f'id="check-item-{item.pk}"'.encode() in response.content
    item.refresh_from_db()
    assert item.done
    responder_client.post(url("checklist_item", incident, item_pk=item.pk), {})
    item.refresh_from_db()
    assert not item.done


def test_a_checklist_item_of_another_incident_is_404(responder_client, incident, responder):
    other = factories.declare(actor=responder, title="Other")
    item = other.checklist.first()
    response = responder_client.post(
        url("checklist_item", incident, item_pk=item.pk), {"done": "on"}
    )
    assert response.status_code == 404
    item.refresh_from_db()
    assert not item.done


def test_older_timeline_pages(responder_client, incident, responder, settings):
    settings.TIMELINE_PAGE_SIZE = 5
    for n in range(12):
        services.add_note(incident, f"note {n}", actor=responder)
    page = responder_client.get(url("detail", incident))
    assert [e.message for e in page.context["events"]][:2] == ["note 11", "note 10"]
    before = page.context["earlier_before"]
    older = responder_client.get(url("timeline_page", incident) + f"?before={before}", **HX)
    assert [e.message for e in older.context["events"]] == [f"note {n}" for n in (6, 5, 4, 3, 2)]
    assert responder_client.get(url("timeline_page", incident) + "?before=x").status_code == 400


# --- query counts ------------------------------------------------------------


def _queries(client: Client, path: str, django_assert_max_num_queries, n: int):
    with django_assert_max_num_queries(n) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def test_dashboard_queries_do_not_grow_with_incidents(
    client, responder, django_assert_max_num_queries
):
    client.force_login(responder)
    factories.declare(actor=responder)
    few = _queries(client, "/", django_assert_max_num_queries, 20)
    for n in range(15):
        incident = factories.declare(
            actor=responder, title=f"Incident {n}", category="security" if n % 3 else "payment"
        )
        if n % 2:
            services.acknowledge_incident(incident, actor=responder)
            services.assign_commander(incident, responder, actor=responder)
        if n % 4 == 1:
            services.transition_incident(incident, Status.RESOLVED, actor=responder)
    many = _queries(client, "/", django_assert_max_num_queries, 20)
    assert many == few


def test_incident_page_queries_do_not_grow_with_events(
    client, incident, responder, other_responder, django_assert_max_num_queries
):
    client.force_login(responder)
    path = url("detail", incident)
    few = _queries(client, path, django_assert_max_num_queries, 25)
    for n in range(30):
        services.add_note(incident, f"note {n}", actor=responder if n % 2 else other_responder)
    many = _queries(client, path, django_assert_max_num_queries, 25)
    assert many == few


def test_cached_timeline_html_never_shows_another_incidents_event(responder_client, responder):
    """Event HTML is cached; a recreated database reuses ids under a cache that lives on."""
    from django.core.cache import cache

    from incidents.models import TimelineEvent
    from incidents.views.incident import rendered_events

    incident = factories.declare(actor=responder, title="First")
    note = services.add_note(incident, "from the first database", actor=responder)
    rendered_events([note])
    pk = note.pk
    TimelineEvent.objects.filter(pk=pk).delete()
    other = factories.declare(actor=responder, title="Second")
    reused = TimelineEvent.objects.create(
        pk=pk, incident=other, seq=2, kind="note", message="fresh"
    )
    html = rendered_events([reused])[0]
    assert "fresh" in html and "from the first database" not in html
    cache.clear()
