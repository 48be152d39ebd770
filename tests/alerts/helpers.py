"""Alertmanager v4 payloads, as Alertmanager sends them."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

STARTED = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)
ZERO = "0001-01-01T00:00:00Z"


def alert(
    name: str = "PostgresConnectionsExhausted",
    *,
    status: str = "firing",
    severity: str = "critical",
    starts: datetime = STARTED,
    ends: datetime | None = None,
    **labels: str,
) -> dict[str, Any]:
    labels = {"alertname": name, "severity": severity, "service": "postgres"} | labels
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{name} on {labels.get('instance', 'db-1')}"},
        "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": ends.isoformat().replace("+00:00", "Z") if ends else ZERO,
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], group: str = "db", truncated: int = 0) -> dict[str, Any]:
    alerts = alerts or (alert(),)
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": truncated,
        "status": "firing" if firing else "resolved",
        "receiver": "lotoops",
        "groupLabels": {"alertname": group},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": list(alerts),
    }


def later(minutes: int) -> datetime:
    return STARTED + timedelta(minutes=minutes)
