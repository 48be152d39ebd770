"""The JSON API: token auth, the pages' permissions, the services' rules."""

from __future__ import annotations

import pytest
from django.utils import timezone

from api.models import ApiToken
from diagnostics.models import CheckRun, Target
from diagnostics.seed import seed_runbooks
from incidents import services
from incidents.models import ActionItem, Category, EventKind, Incident, Status
from tests import factories

pytestmark = pytest.mark.django_db


def test_without_a_token_every_operation_is_refused(client, incident):
    for path in ("/incidents", f"/incidents/{incident.pk}", f"/incidents/{incident.pk}/timeline"):
        response = client.get(f"/api/v1{path}")
        assert response.status_code == 401, path
    assert client.post("/api/v1/incidents", {}, content_type="application/json").status_code == 401


def test_a_revoked_token_is_refused(client, responder, token_for, incident):
    headers = token_for(responder)
    ApiToken.objects.update(revoked_at=timezone.now())

    assert client.get("/api/v1/incidents", headers=headers).status_code == 401


def test_a_wrong_token_is_refused(client, responder, token_for):
    token_for(responder)

    response = client.get("/api/v1/incidents", headers={"Authorization": "Bearer lta_guess"})

    assert response.status_code == 401


def test_tokens_are_stored_hashed(responder, token_for):
    header = token_for(responder)
    row = ApiToken.objects.get()
    assert header["Authorization"].split()[1] not in (row.token_hash, row.prefix)


def test_it_declares_through_the_service(api):
    response = api.post(
        "/incidents",
        {"title": "Bancas timing out", "category": "banca", "severity": "P1", "flags": []},
    )

    assert response.status_code == 201, response.content
    incident = Incident.objects.get(pk=response.json()["id"])
    assert incident.declared_by.username == "ana" and incident.severity.key == "P1"
    assert incident.timeline.filter(kind=EventKind.DECLARED).count() == 1
    assert response.json()["allowed_transitions"] == []


def test_declaring_needs_the_permission(client, viewer, token_for):
    response = client.post(
        "/api/v1/incidents",
        {"title": "x", "category": "banca", "severity": "P1"},
        content_type="application/json",
        headers=token_for(viewer),
    )

    assert response.status_code == 403
    assert not Incident.objects.exists()


def test_an_unknown_severity_is_a_clear_400(api):
    response = api.post("/incidents", {"title": "x", "category": "banca", "severity": "P9"})

    assert response.status_code == 400 and response.json() == {"detail": "Unknown severity 'P9'."}
    assert not Incident.objects.exists()


def test_text_with_a_nul_character_is_refused_not_a_server_error(api):
    response = api.post("/incidents", {"title": "a\x00b", "category": "banca", "severity": "P1"})

    assert response.status_code == 422
    assert not Incident.objects.exists()


def test_a_nul_in_an_action_items_owner_is_refused_not_a_server_error(api, incident):
    item = ActionItem.objects.create(incident=incident, text="Add a canary")

    added = api.post(f"/incidents/{incident.pk}/action-items", {"text": "x", "owner": "a\x00"})
    changed = api.patch(f"/action-items/{item.pk}", {"status": "done", "owner": "a\x00"})

    assert (added.status_code, changed.status_code) == (422, 422)
    assert "NUL" in added.content.decode() and "NUL" in changed.content.decode()
    assert list(ActionItem.objects.values_list("text", "status")) == [("Add a canary", "open")]


def test_acknowledge_transition_note_and_status_update(api, incident):
    assert api.post(f"/incidents/{incident.pk}/acknowledge").json()["status"] == "acknowledged"
    again = api.post(f"/incidents/{incident.pk}/acknowledge")
    assert again.status_code == 409 and "already acknowledged by ana" in again.json()["detail"]

    moved = api.post(f"/incidents/{incident.pk}/transition", {"status": "mitigated", "note": "ok"})
    assert moved.status_code == 200 and moved.json()["status"] == "mitigated"
    refused = api.post(f"/incidents/{incident.pk}/transition", {"status": "declared"})
    assert refused.status_code == 409

    note = api.post(f"/incidents/{incident.pk}/notes", {"text": "Stripe says all good"})
    update = api.post(f"/incidents/{incident.pk}/status-updates", {"text": "Mitigated."})
    assert (note.status_code, update.status_code) == (201, 201)
    assert note.json()["message"].endswith("Stripe says all good")
    assert update.json()["kind"] == "status_update"


def test_a_viewer_may_read_but_not_change(client, viewer, token_for, incident):
    headers = token_for(viewer)

    assert client.get(f"/api/v1/incidents/{incident.pk}", headers=headers).status_code == 200
    response = client.post(f"/api/v1/incidents/{incident.pk}/acknowledge", headers=headers)

    assert response.status_code == 403
    incident.refresh_from_db()
    assert incident.status == Status.DECLARED


def test_restricted_incidents_are_invisible_without_access(client, responder, viewer, token_for):
    secret = factories.declare(actor=responder, title="Breach", category=Category.SECURITY)
    public = factories.declare(actor=responder, title="Outage", category=Category.BANCA)
    viewer_headers, responder_headers = token_for(viewer), token_for(responder)

    listed = client.get("/api/v1/incidents", headers=viewer_headers).json()["items"]
    assert [i["id"] for i in listed] == [public.pk]
    for path in ("", "/timeline", "/check-runs", "/action-items", "/postmortem"):
        response = client.get(f"/api/v1/incidents/{secret.pk}{path}", headers=viewer_headers)
        assert response.status_code == 404, path
    note = client.post(
        f"/api/v1/incidents/{secret.pk}/notes",
        {"text": "peek"},
        content_type="application/json",
        headers=viewer_headers,
    )
    assert note.status_code == 404
    # Its declarer sees it.
    mine = client.get("/api/v1/incidents", headers=responder_headers).json()["items"]
    assert {i["id"] for i in mine} == {secret.pk, public.pk}


def test_the_list_filters_and_pages_with_a_cursor(api, responder):
    made = [
        factories.declare(actor=responder, title=f"I{n}", severity="P1" if n % 2 else "P2")
        for n in range(5)
    ]
    first = api.get("/incidents", limit=2).json()
    second = api.get("/incidents", limit=2, cursor=first["next_cursor"]).json()
    third = api.get("/incidents", limit=2, cursor=second["next_cursor"]).json()

    pages = [[i["id"] for i in page["items"]] for page in (first, second, third)]
    assert pages == [[made[4].pk, made[3].pk], [made[2].pk, made[1].pk], [made[0].pk]]
    assert third["next_cursor"] is None
    p1 = api.get("/incidents", severity="P1").json()["items"]
    assert {i["id"] for i in p1} == {made[1].pk, made[3].pk}
    services.acknowledge_incident(made[0], actor=responder)
    assert [i["id"] for i in api.get("/incidents", status="acknowledged").json()["items"]] == [
        made[0].pk
    ]


def test_the_timeline_reads_on_after_an_event_id(api, incident, responder):
    events = api.get(f"/incidents/{incident.pk}/timeline").json()
    last = events["next_after"]
    services.add_note(incident, "later", actor=responder)

    newer = api.get(f"/incidents/{incident.pk}/timeline", after=last).json()

    assert [e["kind"] for e in newer["items"]] == ["note"]
    assert newer["items"][0]["message"].endswith("later")
    assert api.get(f"/incidents/{incident.pk}/timeline", after=newer["next_after"]).json() == {
        "items": [],
        "next_after": None,
    }


def test_it_requests_a_diagnostic_and_reads_its_result(api, incident):
    seed_runbooks()
    Target.objects.create(name="db", kind="postgres", url="postgresql://x@127.0.0.1:1/x")

    response = api.post(f"/incidents/{incident.pk}/check-runs", {"step": "db.locks"})

    assert response.status_code == 201, response.content
    [run] = response.json()
    assert (run["step"], run["status"], run["requested_by"]) == ("db.locks", "queued", "ana")
    assert api.get(f"/check-runs/{run['id']}").json()["id"] == run["id"]
    assert [r["id"] for r in api.get(f"/incidents/{incident.pk}/check-runs").json()] == [run["id"]]


def test_an_action_cannot_be_run_through_the_diagnostic_request(api, incident):
    seed_runbooks()
    Target.objects.create(name="db", kind="postgres", url="postgresql://x@127.0.0.1:1/x")

    response = api.post(f"/incidents/{incident.pk}/check-runs", {"step": "db.terminate_query"})

    assert response.status_code == 400 and "review and confirm" in response.json()["detail"]
    assert not CheckRun.objects.exists()


def test_postmortem_and_action_items(api, incident, responder):
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.RESOLVED, actor=responder)
    pm = api.get(f"/incidents/{incident.pk}/postmortem").json()

    saved = api.put(
        f"/incidents/{incident.pk}/postmortem/root_cause",
        {"values": {"root_cause": "A bad deploy"}, "version": pm["version"]},
    )
    stale = api.put(
        f"/incidents/{incident.pk}/postmortem/root_cause",
        {
            "values": {"root_cause": "Other"},
            "version": pm["version"],
            "original": {"root_cause": "x"},
        },
    )
    item = api.post(
        f"/incidents/{incident.pk}/action-items", {"text": "Add a canary", "owner": "ana"}
    )
    done = api.patch(f"/action-items/{item.json()['id']}", {"status": "done", "owner": "ana"})

    assert saved.status_code == 200 and saved.json()["root_cause"] == "A bad deploy"
    assert stale.status_code == 409
    assert item.status_code == 201 and item.json()["owner"] == "ana"
    assert done.json()["status"] == "done"
    assert [i["text"] for i in api.get(f"/incidents/{incident.pk}/action-items").json()] == [
        "Add a canary"
    ]


def test_the_schema_and_its_docs_page_are_served_without_a_cdn(client, viewer):
    client.force_login(viewer)
    schema = client.get("/api/v1/openapi.json")
    docs = client.get("/api/v1/docs")

    assert schema.status_code == 200 and schema.json()["info"]["title"] == "LotoOps API"
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()


def test_a_restricted_incidents_run_or_item_answers_exactly_as_a_missing_one(
    client, responder, viewer, token_for
):
    """The 404 body must not tell "exists, but not yours" from "no such row"."""
    from diagnostics.models import RunbookStep
    from diagnostics.services import request_check
    from incidents.postincident.actionitems import add_action_item

    seed_runbooks()
    Target.objects.create(name="db", kind="postgres", url="postgresql://x@127.0.0.1:1/x")
    secret = factories.declare(actor=responder, title="Breach", category=Category.SECURITY)
    [run] = request_check(secret, RunbookStep.objects.get(key="db.locks"), actor=responder)
    item = add_action_item(secret, text="Rotate keys", owner=None, due_date=None, actor=responder)
    headers = token_for(viewer)
    missing = 10**9

    def answer(method: str, path: str):
        response = getattr(client, method)(
            f"/api/v1{path}", {"status": "done"}, content_type="application/json", headers=headers
        )
        return response.status_code, response.content

    assert answer("get", f"/check-runs/{run.pk}") == answer("get", f"/check-runs/{missing}")
    assert answer("patch", f"/action-items/{item.pk}") == answer(
        "patch", f"/action-items/{missing}"
    )
    assert answer("get", f"/check-runs/{run.pk}")[0] == 404
    assert answer("patch", f"/action-items/{item.pk}")[0] == 404


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/docs"])
def test_the_schema_and_its_docs_page_need_the_login(client, responder, token_for, path):
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    # An API token is for the operations, not a way around the login.
    with_token = client.get(path, headers=token_for(responder))
    assert with_token.status_code == 302
