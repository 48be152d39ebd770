"""2xx only after the commit, and never a 5xx once committed."""

from __future__ import annotations

import pytest

from alerts.models import Alert
from diagnostics.models import CheckRun
from incidents.models import Incident
from tests.alerts.helpers import alert, payload

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_broker_failure_after_the_commit_still_answers_200(am_post, pg_target, monkeypatch):
    from diagnostics import tasks

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.run_check, "apply_async", broker_down)

    response = am_post(payload(alert("A")))

    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert Alert.objects.get().incident == incident
    # The database procedure's 4 runs are committed and queued; the reaper sends them
    # again later.
    assert CheckRun.objects.filter(incident=incident, status="queued").count() == 4
