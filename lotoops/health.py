"""What /healthz reports: database, broker, Redis (when configured) and workers.

A missing worker degrades the service (checks cannot run) but the web still
serves, so it does not fail the health check a load balancer acts on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from kombu import Connection

from diagnostics.models import WorkerHeartbeat
from incidents.live import redis_client


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # a health check reports every failure, it never raises
        result = {"status": "error", "error": f"{type(exc).__name__}: {_safe(exc)}"}
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _safe(exc: Exception) -> str:
    """An error message without any URL that might carry a password."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL, settings.DATABASE_URL):
        if url:
            text = text.replace(url, "<url>")
    return text[:200]


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"status": "ok", "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("filesystem://", "lotoopsfs://")):
        folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
        if not folder.is_dir():
            return {"status": "error", "transport": "filesystem", "error": "queue folder missing"}
        return {"status": "ok", "transport": "filesystem"}
    if url == settings.REDIS_URL:
        redis_client().ping()
        return {"status": "ok", "transport": "redis"}
    with Connection(url, connect_timeout=2, transport_options={"max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return {"status": "ok", "transport": conn.transport_cls}


def check_redis() -> dict[str, Any]:
    if not settings.REDIS_URL:
        return {"status": "not configured"}
    redis_client().ping()
    return {"status": "ok"}


def check_workers() -> dict[str, Any]:
    max_age = settings.WORKER_HEARTBEAT_MAX_AGE
    now = timezone.now()
    beats = list(WorkerHeartbeat.objects.order_by("-seen_at")[:20])
    alive = [b.hostname for b in beats if (now - b.seen_at).total_seconds() <= max_age]
    last = beats[0].seen_at.isoformat() if beats else None
    return {"status": "ok" if alive else "down", "alive": alive, "last_seen": last}


def run_checks() -> dict[str, dict[str, Any]]:
    database = _timed(check_database)
    return {
        "database": database,
        "broker": _timed(check_broker),
        "redis": _timed(check_redis),
        # The workers' heartbeats are in the database: with it down, not asked again
        # (a second wait for a connection that will not come).
        "worker": _timed(check_workers)
        if database["status"] == "ok"
        else {"status": "unknown", "error": "the database is down", "ms": 0.0},
    }


# Without these the site cannot serve or queue work: /healthz answers 503.
CRITICAL = ("database", "broker", "redis")


def overall_status(checks: dict[str, dict[str, Any]]) -> str:
    """Error when a critical dependency fails, degraded when no worker is up."""
    if any(checks[name]["status"] not in ("ok", "not configured") for name in CRITICAL):
        return "error"
    return "ok" if checks["worker"]["status"] == "ok" else "degraded"


def public_view(checks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What anyone may read: each component's status, nothing else (no host names,
    versions, timings or error texts)."""
    return {name: {"status": check["status"]} for name, check in checks.items()}


def _is_staff(request: HttpRequest) -> bool:
    try:
        return bool(request.user.is_authenticated and request.user.is_staff)
    except DatabaseError:
        return False


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Up or down per component for anyone (load balancers); the details (workers'
    host names, transports, errors, timings) for logged-in staff only."""
    started = time.perf_counter()
    checks = run_checks()
    status = overall_status(checks)
    # The session and the user are in the database too: with it down, the public view.
    if checks["database"]["status"] != "ok" or not _is_staff(request):
        return JsonResponse(
            {"status": status, "checks": public_view(checks)},
            status=503 if status == "error" else 200,
        )
    body = {
        "status": status,
        "checks": checks,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return JsonResponse(body, status=503 if status == "error" else 200)


@login_not_required
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """May this web process take traffic? Only the database decides: with Redis or
    the broker down every page is still served (runs wait, streams poll), so an
    orchestrator must not take every web pod out of service, nor restart them, for
    that. /healthz reports those dependencies."""
    database = _timed(check_database)["status"]
    return JsonResponse({"status": database}, status=200 if database == "ok" else 503)
