"""Two responders pressing Acknowledge at the same moment, on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from incidents import services
from incidents.models import EventKind, Incident
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_acknowledges_give_one_acknowledgement(responder, other_responder):
    for attempt in range(5):
        incident = factories.declare(actor=responder, title=f"Race {attempt}")
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def acknowledge(user, incident_id=incident.pk, barrier=barrier, outcomes=outcomes):
            try:
                mine = Incident.objects.get(pk=incident_id)
                barrier.wait(timeout=5)
                services.acknowledge_incident(mine, actor=user)
                outcomes[user.username] = "acknowledged"
            except services.IncidentError as exc:
                outcomes[user.username] = str(exc)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=acknowledge, args=(u,)) for u in (responder, other_responder)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert sorted(outcomes.values()).count("acknowledged") == 1, outcomes
        loser = next(msg for msg in outcomes.values() if msg != "acknowledged")
        winner = next(name for name, msg in outcomes.items() if msg == "acknowledged")
        assert loser == f"Incident #{incident.pk} is already acknowledged by {winner}."
        incident.refresh_from_db()
        assert incident.acknowledged_by.username == winner
        assert incident.timeline.filter(kind=EventKind.ACKNOWLEDGED).count() == 1
