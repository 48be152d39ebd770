"""Incidents with a controlled clock, for the post-incident tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from incidents import services
from incidents.models import Incident, Status
from tests import factories

T0 = datetime.fromisoformat("2026-03-02T09:00:00+00:00")


def lived(
    actor,
    *,
    at: datetime = T0,
    ack: float | None = 10,
    mitigate: float | None = 50,
    resolve: float | None = 120,
    severity: str = "P1",
    **kwargs,
) -> Incident:
    """An incident declared at `at`, acknowledged / mitigated / resolved after the
    given minutes (None: never)."""
    incident = factories.declare(actor=actor, severity=severity, now=at, **kwargs)
    if ack is not None:
        services.acknowledge_incident(incident, actor=actor, now=at + timedelta(minutes=ack))
        if mitigate is not None:
            services.transition_incident(
                incident,
                Status.MITIGATED,
                actor=actor,
                note="rolled back the deploy",
                now=at + timedelta(minutes=mitigate),
            )
        if resolve is not None:
            services.transition_incident(
                incident,
                Status.RESOLVED,
                actor=actor,
                note="error rate normal for 30 minutes",
                now=at + timedelta(minutes=resolve),
            )
    incident.refresh_from_db()
    return incident
