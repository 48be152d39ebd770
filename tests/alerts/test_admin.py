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
