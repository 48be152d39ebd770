"""Alertmanager deliveries open, join and resolve incidents, once."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from alerts.models import Alert, AlertGroup, CategoryRule, Delivery, IngestToken
from diagnostics.models import CheckRun, RunStatus
from incidents.models import Category, EventKind, Incident, Status
from incidents.services import acknowledge_incident
from tests.alerts.helpers import STARTED, alert, later, payload

pytestmark = pytest.mark.django_db


def nothing_written() -> bool:
    return not (
        Incident.objects.exists()
        or Alert.objects.exists()
        or AlertGroup.objects.exists()
        or Delivery.objects.exists()
    )


def test_a_firing_alert_declares_an_incident_with_its_mapped_severity_and_category(
    am_post, pg_target
):
    response = am_post(payload(alert(severity="critical", service="postgres")))

    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert (incident.severity.key, incident.category) == ("P0", Category.DATABASE)
    assert incident.title == "PostgresConnectionsExhausted on db-1"
    assert incident.declared_by is None and incident.alert_fingerprint
    assert response.json()["declared"] == [incident.pk]
    first = incident.timeline.get(kind=EventKind.ALERT)
    assert first.message.startswith("First alert triggered: PostgresConnectionsExhausted")
    assert first.created_at == STARTED


def test_declaring_starts_the_categorys_diagnostics_through_the_engine(am_post, pg_target):
    am_post(payload(alert(service="postgres")))

    incident = Incident.objects.get()
    runs = CheckRun.objects.filter(incident=incident)
    assert sorted(runs.values_list("step__key", flat=True)) == [
        "db.active_queries",
        "db.idle_in_transaction",
        "db.locks",
        "db.slow_queries",
    ]
    assert {r.status for r in runs} == {RunStatus.QUEUED}
    assert {r.requested_by for r in runs} == {None}
    assert incident.timeline.filter(kind=EventKind.CHECK_RUN, message__startswith="LotoOps ran")


def test_without_a_target_the_timeline_says_why_diagnostics_did_not_start(am_post):
    am_post(payload(alert(service="postgres")))

    incident = Incident.objects.get()
    assert not CheckRun.objects.exists()
    assert incident.timeline.filter(message__startswith="Automatic diagnostics of").exists()


def test_a_repeated_delivery_changes_nothing_but_its_record(am_post, pg_target):
    body = payload(alert("A", instance="db-1"), alert("B", instance="db-2"))
    am_post(body)
    events = Incident.objects.get().timeline.count()

    second = am_post(body)

    assert second.status_code == 200
    assert second.json()["repeated"] == 2 and second.json()["declared"] == []
    assert Incident.objects.count() == 1
    assert Incident.objects.get().timeline.count() == events
    assert Alert.objects.count() == 2 and Delivery.objects.count() == 2


def test_a_new_alert_in_the_group_joins_its_open_incident(am_post):
    am_post(payload(alert("A", instance="db-1")))
    am_post(payload(alert("A", instance="db-1"), alert("A", instance="db-2", starts=later(2))))

    incident = Incident.objects.get()
    alerts = incident.timeline.filter(kind=EventKind.ALERT)
    messages = list(alerts.values_list("message", flat=True))
    assert messages == ["First alert triggered: A: A on db-1", "Alert triggered: A: A on db-2"]


def test_an_alert_joins_by_fingerprint_across_groups(am_post):
    am_post(payload(alert("A"), group="one"))
    am_post(payload(alert("A", starts=later(5)), group="two"))

    assert Incident.objects.count() == 1
    assert Alert.objects.filter(incident=Incident.objects.get()).count() == 2


def test_a_resolved_alert_is_on_the_timeline_at_its_end_time(am_post):
    am_post(payload(alert("A")))
    resolved = alert("A", status="resolved", ends=later(7))

    response = am_post(payload(resolved))
    am_post(payload(resolved))

    incident = Incident.objects.get()
    event = incident.timeline.get(kind=EventKind.ALERT, data__resolved=True)
    assert event.message == "Alert resolved: A: A on db-1"
    assert event.created_at == later(7)
    assert response.json()["resolved_alerts"] == 1
    assert incident.status == Status.DECLARED


def test_resolving_every_alert_can_move_an_acknowledged_incident_to_mitigated(am_post, responder):
    CategoryRule.objects.filter(matchers={"service": "postgres"}).update(mitigate_on_resolve=True)
    CategoryRule.objects.filter(matchers={"category": "database"}).update(mitigate_on_resolve=True)
    am_post(payload(alert("A", instance="1"), alert("A", instance="2")))
    incident = Incident.objects.get()
    acknowledge_incident(incident, actor=responder)

    am_post(payload(alert("A", instance="1", status="resolved", ends=later(3))))
    incident.refresh_from_db()
    assert incident.status == Status.ACKNOWLEDGED

    am_post(payload(alert("A", instance="2", status="resolved", ends=later(4))))
    incident.refresh_from_db()
    assert incident.status == Status.MITIGATED
    assert incident.timeline.filter(message__contains="every alert resolved").count() == 1


def test_an_info_alert_only_joins_and_is_recorded_when_nothing_is_open(am_post):
    response = am_post(payload(alert("Noise", severity="info")))

    assert response.status_code == 200 and response.json()["unattached"] == 1
    assert not Incident.objects.exists()
    assert Alert.objects.get().incident is None


def test_an_info_alert_joins_an_open_incident_of_its_category(am_post):
    am_post(payload(alert("A"), group="g1"))
    am_post(payload(alert("Noise", severity="info"), group="g2"))

    assert Incident.objects.count() == 1
    assert Alert.objects.get(name="Noise").incident == Incident.objects.get()


def test_after_the_incident_is_resolved_a_new_firing_declares_a_new_incident(am_post, responder):
    am_post(payload(alert("A")))
    first = Incident.objects.get()
    acknowledge_incident(first, actor=responder)
    from incidents.services import transition_incident

    transition_incident(first, Status.RESOLVED, actor=responder)

    am_post(payload(alert("A", starts=later(60))))

    assert Incident.objects.count() == 2
    assert AlertGroup.objects.get().incident != first


def test_truncated_alerts_are_recorded(am_post):
    response = am_post(payload(alert("A"), truncated=12))

    assert Delivery.objects.get(pk=response.json()["delivery"]).truncated_alerts == 12


def test_a_security_alert_declares_a_restricted_incident(am_post):
    am_post(payload(alert("Intrusion", category="security", service="edge")))

    incident = Incident.objects.get()
    assert incident.category == Category.SECURITY and incident.restricted


# --- bad input: a clear 4xx and nothing written --------------------------------------


def test_a_wrong_token_is_refused(am_post):
    response = am_post(payload(), token="lto_not-the-token")

    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    assert nothing_written()


def test_a_missing_token_is_refused(client, alert_rules):
    response = client.post("/hooks/alertmanager/", data=payload(), content_type="application/json")

    assert response.status_code == 401
    assert nothing_written()


def test_a_revoked_token_is_refused(am_post, am_token):
    IngestToken.objects.update(revoked_at=timezone.now())

    response = am_post(payload())

    assert response.status_code == 401
    assert nothing_written()


def test_tokens_are_stored_hashed(am_token):
    row = IngestToken.objects.get()
    assert am_token not in (row.token_hash, row.prefix)
    assert len(row.token_hash) == 64


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "Not an Alertmanager v4 payload"),
        (json.dumps(payload() | {"version": "3"}), "version"),
        (json.dumps(payload() | {"alerts": []}), "alerts"),
        (json.dumps(payload() | {"alerts": [{"status": "firing"}]}), "labels"),
        (json.dumps(payload(alert() | {"startsAt": "yesterday"})), "startsAt"),
        (json.dumps(payload(alert() | {"startsAt": "2026-11-29T03:00:00"})), "time zone"),
    ],
)
def test_a_malformed_payload_is_refused(am_post, body, says):
    response = am_post(body)

    assert response.status_code == 400
    assert says in response.json()["error"]
    assert nothing_written()


def test_an_alert_no_rule_maps_refuses_the_whole_delivery(am_post):
    unknown = alert("Mystery", severity="catastrophic", service="toaster")

    response = am_post(payload(alert("A"), unknown))

    assert response.status_code == 422
    assert "No severity or category rule matches alert 'Mystery'" in response.json()["error"]
    assert nothing_written()


def test_a_rule_added_in_the_admin_maps_the_next_delivery_at_once(am_post, admin_client):
    """The rules are kept per process for a second; a save clears them."""
    unknown = alert("Mystery", severity="critical", service="toaster")
    assert am_post(payload(unknown)).status_code == 422  # the rules are now cached

    CategoryRule.objects.create(
        matchers={"service": "toaster"}, category=Category.BANCA, may_declare=True
    )

    response = am_post(payload(unknown))
    assert response.status_code == 200, response.content
    assert Incident.objects.get().category == Category.BANCA


def test_a_10_mb_payload_is_refused_unread(am_post):
    huge = payload(*[alert("A", instance=f"db-{i}") for i in range(1)])
    huge["commonAnnotations"] = {"padding": "x" * (10 * 1024 * 1024)}

    response = am_post(huge)

    assert response.status_code == 413
    assert nothing_written()


def test_only_post_is_accepted(client, am_token):
    assert client.get("/hooks/alertmanager/").status_code == 405
