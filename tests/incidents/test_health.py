"""/healthz: no login, JSON status of the database, broker, Redis and workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnostics.models import WorkerHeartbeat
from diagnostics.tasks import heartbeat
from tests import factories
from tests.conftest import redis_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    """The details (transports, workers' host names, errors) are for logged-in staff."""
    client.force_login(factories.UserFactory(username="ops", is_staff=True))
    return client


def test_healthz_reports_each_dependency_in_detail_to_staff(staff, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    (tmp_path / "queue").mkdir()
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "queue")}
    response = staff.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"  # no worker has ever reported
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["broker"] == {
        "status": "ok",
        "transport": "filesystem",
        "ms": checks["broker"]["ms"],
    }
    assert checks["redis"]["status"] == "not configured"
    assert checks["worker"]["status"] == "down"


def test_a_worker_heartbeat_shows_the_worker_up_until_it_goes_stale(staff, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    (tmp_path / "queue").mkdir()
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "queue")}
    heartbeat(hostname="worker@test")
    body = staff.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["checks"]["worker"]["alive"] == ["worker@test"]
    WorkerHeartbeat.objects.filter(hostname="worker@test").update(
        seen_at=timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE + 1)
    )
    assert staff.get("/healthz").json()["checks"]["worker"]["status"] == "down"


def test_a_missing_broker_folder_is_an_error_503(client, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "gone")}
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "error"


@pytest.mark.redis
def test_healthz_pings_redis_when_configured(staff, settings):
    from incidents import live

    settings.REDIS_URL = settings.CELERY_BROKER_URL = redis_url()
    live.redis_client.cache_clear()
    checks = staff.get("/healthz").json()["checks"]
    assert checks["redis"]["status"] == "ok"
    assert checks["broker"]["transport"] == "redis"


def test_an_unreachable_redis_is_reported_without_its_password(staff, settings):
    from incidents import live

    settings.REDIS_URL = "redis://:hunter2-secret@127.0.0.1:1/0"
    live.redis_client.cache_clear()
    try:
        response = staff.get("/healthz")
    finally:
        live.redis_client.cache_clear()
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["status"] == "error"
    assert b"hunter2-secret" not in response.content


def test_without_login_healthz_says_only_up_or_down_per_component(client, settings):
    from incidents import live

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # refused: an error text to hide
    live.redis_client.cache_clear()
    heartbeat(hostname="worker@db-host-7.internal")
    try:
        response = client.get("/healthz")
    finally:
        live.redis_client.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body == {
        "status": "error",
        "checks": {
            "database": {"status": "ok"},
            "broker": {"status": body["checks"]["broker"]["status"]},
            "redis": {"status": "error"},
            "worker": {"status": "ok"},
        },
    }
    assert b"db-host-7" not in response.content and b"Connection" not in response.content


def test_readiness_ignores_redis_and_the_broker(client, settings):
    """With Redis down /healthz says 503, but the web still serves every page: the
    readiness endpoint the orchestrator asks answers 200 while the database does."""
    from incidents import live

    settings.REDIS_URL = settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    live.redis_client.cache_clear()
    try:
        assert client.get("/healthz").status_code == 503
        ready = client.get("/readyz")
    finally:
        live.redis_client.cache_clear()
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}
