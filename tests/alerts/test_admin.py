"""Tokens are made in the admin, shown once, stored hashed."""

from __future__ import annotations

import hashlib
import re

import pytest

from alerts.models import IngestToken
from api.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, runbook, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@lotolink.test", "pw")
    client.force_login(admin)
    return client, admin


def shown_token(response, prefix: str) -> str:
    text = response.content.decode()
    [token] = set(re.findall(rf"\b({prefix}[A-Za-z0-9_\-]{{20,}})", text))
    return token


def test_an_ingest_token_is_shown_once_and_stored_hashed(admin_client):
    client, _ = admin_client

    made = client.post(
        "/admin/alerts/ingesttoken/add/",
        {"name": "alertmanager-prod", "source": "alertmanager"},
        follow=True,
    )

    token = shown_token(made, "lto_")
    row = IngestToken.objects.get()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listing = client.get("/admin/alerts/ingesttoken/").content.decode()
    assert (
        token not in listing
        and token not in client.get(f"/admin/alerts/ingesttoken/{row.pk}/change/").content.decode()
    )


def test_an_api_token_is_shown_once_and_stored_hashed(admin_client):
    client, admin = admin_client

    made = client.post("/admin/api/apitoken/add/", {"user": admin.pk, "name": "bot"}, follow=True)

    token = shown_token(made, "lta_")
    row = ApiToken.objects.get()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and row.user == admin
    assert token not in client.get(f"/admin/api/apitoken/{row.pk}/change/").content.decode()


# --- a restricted incident's alerts (issue 20, the Alerts admin) ------------------------

SECRET = "Card numbers exfiltrated through the admin export"


@pytest.fixture
def alert_staff(client, runbook, django_user_model):
    """Staff with only the alerts' view permissions, as the security review had."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("alice", "alice@lotolink.test", "pw")
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="alerts",
            codename__in=["view_alert", "view_alertgroup", "view_delivery"],
        )
    )
    client.force_login(user)
    return client


@pytest.fixture
def secret_alert(responder):
    from django.utils import timezone

    from alerts.models import Alert, AlertGroup, Delivery
    from tests import factories

    incident = factories.declare(
        actor=responder, severity="P0", category="security", title=SECRET, summary=SECRET
    )
    assert incident.restricted
    group = AlertGroup.objects.create(
        key_hash="a" * 64, group_key=f'{{}}:{{alertname="{SECRET}"}}', incident=incident
    )
    Delivery.objects.create(group=group, status="declared", alerts=1)
    return Alert.objects.create(
        fingerprint="f00dfeed",
        starts_at=timezone.now(),
        group=group,
        incident=incident,
        name="CardsTableDump",
        annotations={"summary": SECRET},
    )


def test_the_alerts_admin_hides_a_restricted_incidents_alerts(alert_staff, secret_alert):
    client = alert_staff
    for path in [
        "/admin/alerts/alert/",
        "/admin/alerts/alertgroup/",
        "/admin/alerts/delivery/",
    ]:
        response = client.get(path)
        assert response.status_code == 200
        page = response.content.decode()
        assert SECRET not in page and "f00dfeed" not in page, path
    assert "0 alerts" in client.get("/admin/alerts/alert/?q=CardsTableDump").content.decode()
    for path in [
        f"/admin/alerts/alert/{secret_alert.pk}/change/",
        f"/admin/alerts/alertgroup/{secret_alert.group.pk}/change/",
        f"/admin/alerts/delivery/{secret_alert.group.deliveries.get().pk}/change/",
    ]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/admin/", path


def test_a_superuser_still_sees_them(admin_client, secret_alert):
    client, _ = admin_client
    assert "CardsTableDump" in client.get("/admin/alerts/alert/").content.decode()
    page = client.get(f"/admin/alerts/alert/{secret_alert.pk}/change/").content.decode()
    assert SECRET in page
