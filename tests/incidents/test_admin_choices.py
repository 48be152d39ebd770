"""Admin that cannot be mis-set: contacts' categories and flags, steps' evidence keys
are chosen from the known values (checkboxes), validated on every path; durations are
positive. A typo is refused with a clear message and nothing is saved."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError

from diagnostics.models import Runbook, RunbookStep
from diagnostics.probes.findings import EVIDENCE_KEYS
from diagnostics.seed import seed_runbooks
from incidents.models import EscalationContact, EscalationRole, Severity
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, runbook):
    client.force_login(factories.UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def legal(runbook) -> EscalationContact:
    return EscalationContact.objects.get(role=EscalationRole.LEGAL)


def contact_form(contact: EscalationContact, **changes) -> dict:
    data = {
        "role": contact.role,
        "name": contact.name,
        "user": "",
        "phone": contact.phone,
        "email": contact.email,
        "slack_handle": contact.slack_handle,
        "level": contact.level,
        "when_to_escalate": contact.when_to_escalate,
        "severities": [s.pk for s in contact.severities.all()],
        "categories": list(contact.categories),
        "flags": list(contact.flags),
        "extended_outage_after": "",
        "active": "on",
        "in_escalation_chain": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def row(contact: EscalationContact) -> tuple:
    return tuple(EscalationContact.objects.filter(pk=contact.pk).values_list().get())


def change(client, contact, **changes):
    return client.post(
        f"/admin/incidents/escalationcontact/{contact.pk}/change/", contact_form(contact, **changes)
    )


# --- contacts: flags and categories ---------------------------------------------------


def test_the_contact_page_offers_checkboxes_of_the_known_flags_and_categories(admin_client, legal):
    page = admin_client.get(f"/admin/incidents/escalationcontact/{legal.pk}/change/")
    html = page.content.decode()
    assert 'type="checkbox" name="flags" value="data_breach"' in html
    assert 'type="checkbox" name="categories" value="payment"' in html
    assert "Data breach" in html and "Payment processing" in html
    # The help says what ticking one does.
    assert "Told when a responder sets one of these flags" in html


def test_a_typo_in_a_flag_is_refused_with_a_clear_message_and_nothing_is_saved(admin_client, legal):
    before = row(legal)
    response = change(admin_client, legal, flags=["databreach", "regulatory"])
    assert response.status_code == 200  # the form again, with the error
    html = response.content.decode()
    assert "“databreach” is not a known flag" in html
    assert "security, data_loss, data_breach, regulatory" in html
    assert row(legal) == before
    assert EscalationContact.objects.get(pk=legal.pk).flags == ["data_breach", "regulatory"]


def test_a_typo_in_a_category_is_refused_with_a_clear_message(admin_client, legal):
    before = row(legal)
    response = change(admin_client, legal, categories=["payments"])
    assert response.status_code == 200
    assert "“payments” is not a known category" in response.content.decode()
    assert row(legal) == before


def test_ticked_values_are_saved_as_a_list(admin_client, legal):
    response = change(admin_client, legal, categories=["payment", "security"], flags=["data_loss"])
    assert response.status_code == 302, response.content.decode()[:2000]
    legal.refresh_from_db()
    assert (legal.categories, legal.flags) == (["payment", "security"], ["data_loss"])


@pytest.mark.parametrize(
    "raw",
    ['["data_breach"]', "data_breach,regulatory", '"data_breach"', "{}", ""],
)
def test_a_staff_user_posting_raw_values_is_refused(client, runbook, legal, raw):
    """Not a superuser: a staff member with only the contact's change permission,
    posting by hand what the JSON textarea used to take."""
    staff = factories.UserFactory(username="maint", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="change_escalationcontact"),
        Permission.objects.get(codename="view_escalationcontact"),
    )
    client.force_login(staff)
    before = row(legal)
    response = change(client, legal, flags=[raw])
    assert response.status_code == 200
    assert "is not a known flag" in response.content.decode()
    assert row(legal) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("flags", ["databreach"], "Unknown flag 'databreach'. Did you mean 'data_breach'?"),
        ("flags", "data_breach", "Expected a list of flags, got the text 'data_breach'"),
        ("categories", ["Payment"], "Unknown category 'Payment'. Did you mean 'payment'?"),
        ("categories", "payment", "Expected a list of categories, got the text 'payment'"),
        ("flags", ["security", "security"], "A flag is listed twice."),
        ("flags", [1], "Unknown flag 1."),
        ("categories", {"payment": True}, "Expected a list of categories, got dict."),
    ],
)
def test_the_model_refuses_what_the_admin_refuses_on_every_path(legal, field, value, message):
    setattr(legal, field, value)
    with pytest.raises(ValidationError) as refused:
        legal.full_clean()
    assert message in str(refused.value)
    with pytest.raises(ValidationError):
        legal.save()  # a shell, a script, a seed: the same refusal
    fresh = EscalationContact.objects.get(pk=legal.pk)
    assert getattr(fresh, field) != value


def test_the_seeded_contacts_and_runbooks_are_valid(runbook):
    seed_runbooks()
    for contact in EscalationContact.objects.all():
        contact.full_clean()
    for book in Runbook.objects.all():
        book.full_clean()
    problems = {s.key: s.evidence_problems() for s in RunbookStep.objects.all()}
    assert {k: v for k, v in problems.items() if v} == {}


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-00:15:00", "00:00:00", "-1 00:00:00"])
def test_a_severity_response_time_must_be_positive(admin_client, value):
    p1 = Severity.objects.get(key="P1")
    before = p1.response_time
    response = admin_client.post(
        f"/admin/incidents/severity/{p1.pk}/change/",
        {
            "key": "P1",
            "name": p1.name,
            "description": p1.description,
            "response_time": value,
            "examples": p1.examples,
            "order": p1.order,
        },
    )
    assert response.status_code == 200
    assert "Enter a duration longer than zero" in response.content.decode()
    p1.refresh_from_db()
    assert p1.response_time == before
    p1.response_time = timedelta(seconds=-1)
    with pytest.raises(ValidationError):
        p1.save()


def test_an_extended_outage_duration_must_be_positive(admin_client):
    manager = EscalationContact.objects.get(role=EscalationRole.ENGINEERING_MANAGER)
    response = change(admin_client, manager, extended_outage_after="-02:00:00")
    assert response.status_code == 200
    assert "Enter a duration longer than zero" in response.content.decode()
    manager.refresh_from_db()
    assert manager.extended_outage_after == timedelta(hours=2)


# --- runbook steps: finds and recommended_by --------------------------------------------


def step_form(step: RunbookStep, **changes) -> dict:
    data = {
        "runbook": step.runbook_id,
        "key": step.key,
        "title": step.title,
        "kind": step.kind,
        "probe": step.probe,
        "target_kind": step.target_kind,
        "params": json.dumps(step.params),
        "finds": list(step.finds),
        "recommended_by": list(step.recommended_by),
        "command": step.command,
        "timeout_seconds": step.timeout_seconds,
        "order": step.order,
        "every_target": "on" if step.every_target else "",
    }
    data.update(changes)
    return data


def test_a_step_offers_the_evidence_keys_as_checkboxes(admin_client):
    seed_runbooks()
    kill = RunbookStep.objects.get(key="db.terminate_query")
    html = admin_client.get(f"/admin/diagnostics/runbookstep/{kill.pk}/change/").content.decode()
    assert 'type="checkbox" name="recommended_by" value="long_running_queries"' in html
    assert "Long-running queries" in html
    # Keys a step's parameters name (a count query's) are offered too.
    assert 'value="plays_stuck"' in html


def test_a_typo_in_recommended_by_is_refused_and_nothing_is_saved(admin_client):
    seed_runbooks()
    kill = RunbookStep.objects.get(key="db.terminate_query")
    before = list(RunbookStep.objects.filter(pk=kill.pk).values_list())
    response = admin_client.post(
        f"/admin/diagnostics/runbookstep/{kill.pk}/change/",
        step_form(kill, recommended_by=["long_running_query"]),
    )
    assert response.status_code == 200
    assert "“long_running_query” is not a known evidence key" in response.content.decode()
    assert list(RunbookStep.objects.filter(pk=kill.pk).values_list()) == before


def test_a_steps_evidence_keys_are_checked_on_save_whatever_the_path(runbook):
    seed_runbooks()
    locks = RunbookStep.objects.get(key="db.locks")
    locks.finds = ["lock_contentoin"]
    with pytest.raises(ValidationError, match="Unknown evidence key 'lock_contentoin'"):
        locks.save()
    locks.finds = "lock_contention"
    with pytest.raises(ValidationError, match="Expected a list of evidence keys"):
        locks.full_clean()
    locks.refresh_from_db()
    assert locks.finds == ["lock_contention"]
    # A count query may name its own key, and then find it.
    book = locks.runbook
    made = RunbookStep.objects.create(
        runbook=book,
        key="db.custom_count",
        title="Custom count",
        kind="diagnostic",
        probe="postgres.count_query",
        target_kind="postgres",
        params={"sql": "SELECT 1", "evidence": "refunds_stuck", "threshold": 1, "label": "x"},
        finds=["refunds_stuck"],
    )
    assert made.finds == ["refunds_stuck"]


def test_a_step_timeout_must_be_at_least_a_second(admin_client):
    seed_runbooks()
    locks = RunbookStep.objects.get(key="db.locks")
    response = admin_client.post(
        f"/admin/diagnostics/runbookstep/{locks.pk}/change/", step_form(locks, timeout_seconds=0)
    )
    assert response.status_code == 200
    assert "A step needs at least one second to run." in response.content.decode()


def test_every_evidence_key_has_words_for_people():
    assert all(label and label[0].isupper() for label in EVIDENCE_KEYS.values())
