"""The rogue admin (issue 20): a seeded Admin (staff, the Admins group, nothing else)
tries everything an Admin can reach, in Django admin (every registered model's
changelist, search, add, change, history, delete and autocomplete pages, and the
forms' POSTs) and in the API, against a restricted security incident with its
alerts, check run, evidence, note, action item and post-mortem, and against the
targets' secrets. Nothing of the incident leaks (its title, summary, a note's text,
an alert's annotation never appear: 404, 403 or a redirect), no target's secret
value appears, and no working action (acknowledge, resolve, status update, note,
run a check, review an action item) succeeds, on that incident or an open one.

He was also named, before the fix, as the person behind the Legal contact told of
security incidents: paging grants him nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, AlertGroup
from api import tokens as api_tokens
from diagnostics.models import CheckRun, RunbookStep, Target
from diagnostics.seed import seed_runbooks
from incidents import evidence, services
from incidents.models import (
    ActionItem,
    Category,
    EscalationContact,
    Incident,
    PostMortem,
    Status,
)
from incidents.paging import tasks as paging_tasks
from tests import factories

pytestmark = pytest.mark.django_db

TITLE = "Card numbers exfiltrated via the support export"
SUMMARY = "Support token of agent 4411 used to dump the cards table"
NOTE = "Confirmed 18204 PANs left through bastion-7"
ANNOTATION = "Cards table dump observed from bastion-7"
TARGET_SECRET = "pg-pass-Zx81-never-shown"
NEVER_SHOWN = (TITLE, SUMMARY, NOTE, ANNOTATION, "bastion-7", "agent 4411", TARGET_SECRET)
SEARCHES = ("Card", "bastion", "exfiltrated", "4411")


@pytest.fixture
def world(runbook: None, responder: Any, settings, tmp_path, monkeypatch) -> dict[str, Any]:
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""
    seed_runbooks()
    monkeypatch.setenv("LOTOLINK_DB_PASSWORD", TARGET_SECRET)
    Target.objects.update_or_create(
        name="rogue-walk-db",
        defaults={
            "kind": "postgres",
            "url": "postgres://lotolink@db:5432/lotolink",
            "secret_env": "LOTOLINK_DB_PASSWORD",
        },
    )
    admin1 = factories.UserFactory(username="admin1", is_staff=True)
    admin1.groups.add(Group.objects.get(name="Admins"))
    # As the review found it: admin1 named himself the person behind Legal, told of
    # every security incident (the admin form now refuses this to non-superusers).
    EscalationContact.objects.filter(role="legal").update(user=admin1, categories=["security"])

    secret = factories.declare(
        actor=responder, severity="P0", category=Category.SECURITY, title=TITLE, summary=SUMMARY
    )
    assert secret.restricted
    paging_tasks.page_incident(secret.pk)
    services.add_note(secret, NOTE, actor=responder)
    item = ActionItem.objects.create(incident=secret, text=f"Close {NOTE}")
    PostMortem.objects.create(incident=secret, title=f"{TITLE} post-mortem", summary=SUMMARY)
    step = RunbookStep.objects.filter(kind="diagnostic").first()
    CheckRun.objects.create(incident=secret, step=step, summary=NOTE)
    source = tmp_path / "bastion.log"
    source.write_text(f"{NOTE}\n")
    evidence.store_file(
        secret, name="bastion.log", source_path=source, content_type="text/plain", actor=responder
    )
    group = AlertGroup.objects.create(key_hash="b" * 64, group_key="{}:{}", incident=secret)
    Alert.objects.create(
        fingerprint="c0ffee",
        starts_at=timezone.now(),
        group=group,
        incident=secret,
        name="CardsDump",
        annotations={"summary": ANNOTATION},
    )

    open_incident = factories.declare(actor=responder, title="Payments slow")
    open_item = ActionItem.objects.create(incident=open_incident, text="Add an alert")
    return {
        "admin1": admin1,
        "secret": secret,
        "item": item,
        "open": open_incident,
        "open_item": open_item,
    }


def leaks(body: bytes) -> list[str]:
    text = body.decode(errors="replace")
    return [words for words in NEVER_SHOWN if words.lower() in text.lower()]


def test_paging_him_about_it_granted_him_nothing(client, world):
    secret = world["secret"]
    assert secret.notifications.filter(contact__role="legal", status="withheld").exists()
    client.force_login(world["admin1"])
    assert client.get(f"/incidents/{secret.pk}/").status_code == 404
    assert not leaks(client.get("/").content)


def test_nothing_in_django_admin_shows_him_the_incident_or_a_secret(client, world):
    client.force_login(world["admin1"])
    client.raise_request_exception = False
    found: list[str] = []
    seen = 0
    for model, model_admin in admin.site._registry.items():
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        urls = [base, f"{base}add/", *(f"{base}?q={q}" for q in SEARCHES)]
        for pk in model._default_manager.values_list("pk", flat=True)[:100]:
            urls += [f"{base}{pk}/change/", f"{base}{pk}/history/", f"{base}{pk}/delete/"]
        for field in getattr(model_admin, "autocomplete_fields", ()):
            for term in ("", *SEARCHES):
                urls.append(
                    f"/admin/autocomplete/?app_label={model._meta.app_label}"
                    f"&model_name={model._meta.model_name}&field_name={field}&term={term}"
                )
        for url in urls:
            response = client.get(url)
            seen += 1
            if response.status_code >= 500:
                found.append(f"{url}: {response.status_code}")
            elif leaks(response.content):
                found.append(f"{url}: shows {leaks(response.content)}")
    secret = world["secret"]
    for url in [
        f"/admin/incidents/incident/{secret.pk}/permissions/",
        f"/admin/incidents/incident/{secret.pk}/permissions/user-manage/{world['admin1'].pk}/",
    ]:
        response = client.get(url)
        if response.status_code != 403 or leaks(response.content):
            found.append(f"{url}: {response.status_code}")
    assert found == [] and seen > 200
    change = client.get(f"/admin/incidents/incident/{secret.pk}/change/")
    assert change.status_code == 302 and change["Location"] == "/admin/"


def _open_change_form(client: Any, incident: Incident) -> dict[str, Any]:
    return {
        "title": incident.title,
        "summary": "",
        "impacted_services": "[]",
        "status": Status.RESOLVED,
        "category": Category.SECURITY,
        "restricted": "",
    }


def test_django_admin_lets_him_work_nothing(client, world):
    client.force_login(world["admin1"])
    secret, incident, item = world["secret"], world["open"], world["open_item"]
    events = {i.pk: i.timeline.count() for i in (secret, incident)}
    attempts = [
        (f"/admin/incidents/incident/{secret.pk}/change/", _open_change_form(client, secret)),
        (f"/admin/incidents/incident/{incident.pk}/change/", _open_change_form(client, incident)),
        (
            f"/admin/incidents/actionitem/{item.pk}/change/",
            {"incident": incident.pk, "text": item.text, "status": "verified"},
        ),
        (
            f"/admin/incidents/actionitem/{world['item'].pk}/change/",
            {"incident": secret.pk, "text": "x", "status": "verified"},
        ),
        (
            "/admin/incidents/timelineevent/add/",
            {"incident": incident.pk, "kind": "note", "message": "from admin", "data": "{}"},
        ),
    ]
    for url, data in attempts:
        response = client.post(url, data)
        assert response.status_code in (302, 403), url
        if response.status_code == 302:
            assert response["Location"] == "/admin/", url  # "doesn't exist": hidden
    secret.refresh_from_db()
    incident.refresh_from_db()
    item.refresh_from_db()
    world["item"].refresh_from_db()
    assert secret.restricted and secret.status == Status.DECLARED
    assert (incident.status, incident.category, incident.restricted) == (
        Status.DECLARED,
        Category.PAYMENT,
        False,
    )
    assert item.status == world["item"].status == "open"
    assert {i.pk: i.timeline.count() for i in (secret, incident)} == events


def test_the_api_shows_him_nothing_of_it_and_lets_him_work_nothing(client, world):
    _, token = api_tokens.issue(world["admin1"], "rogue")
    auth = {"Authorization": f"Bearer {token}"}
    secret, incident = world["secret"], world["open"]
    listing = client.get("/api/v1/incidents", headers=auth)
    assert listing.status_code == 200 and not leaks(listing.content)
    run = secret.check_runs.get()
    for path in [
        f"/api/v1/incidents/{secret.pk}",
        f"/api/v1/incidents/{secret.pk}/timeline",
        f"/api/v1/incidents/{secret.pk}/check-runs",
        f"/api/v1/incidents/{secret.pk}/postmortem",
        f"/api/v1/incidents/{secret.pk}/action-items",
        f"/api/v1/check-runs/{run.pk}",
    ]:
        response = client.get(path, headers=auth)
        assert response.status_code == 404 and not leaks(response.content), path
    step = RunbookStep.objects.filter(kind="diagnostic").first()
    work = [
        ("post", "acknowledge", {}),
        ("post", "transition", {"status": "resolved", "note": "done"}),
        ("post", "notes", {"text": "from admin1"}),
        ("post", "status-updates", {"text": "All fine, says admin1"}),
        ("post", "check-runs", {"step": step.key}),
        ("post", "action-items", {"text": "from admin1"}),
        ("put", "postmortem/summary", {"values": {"summary": "x"}, "version": 0}),
    ]
    runs_before = CheckRun.objects.count()
    for target, refused in ((incident, 403), (secret, 404)):
        events = target.timeline.count()
        for method, suffix, body in work:
            response = getattr(client, method)(
                f"/api/v1/incidents/{target.pk}/{suffix}",
                body,
                content_type="application/json",
                headers=auth,
            )
            assert response.status_code == refused, (target.pk, suffix, response.status_code)
            assert not leaks(response.content)
        target.refresh_from_db()
        assert target.status == Status.DECLARED and target.timeline.count() == events
    for item, refused in ((world["open_item"], 403), (world["item"], 404)):
        response = client.patch(
            f"/api/v1/action-items/{item.pk}",
            {"status": "verified"},
            content_type="application/json",
            headers=auth,
        )
        assert response.status_code == refused
        item.refresh_from_db()
        assert item.status == "open"
    assert CheckRun.objects.count() == runs_before


def test_the_site_lets_him_work_nothing(client, world):
    client.force_login(world["admin1"])
    incident = world["open"]
    step = RunbookStep.objects.filter(kind="diagnostic").first()
    events = incident.timeline.count()
    for url, data in [
        (reverse("incidents:acknowledge", args=[incident.pk]), {}),
        (reverse("incidents:note", args=[incident.pk]), {"text": "from admin1"}),
        (reverse("incidents:status_update", args=[incident.pk]), {"text": "All fine"}),
        (reverse("diagnostics:run_step", args=[incident.pk, step.key]), {}),
    ]:
        assert client.post(url, data).status_code == 403, url
    incident.refresh_from_db()
    assert incident.status == Status.DECLARED and incident.timeline.count() == events
