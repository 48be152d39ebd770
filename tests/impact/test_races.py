"""Beats as production runs them: separate processes sweeping at the same instant
(a second beat that took over, a retried task). Each regulatory escalation step is
created once, and one money sample is stored per incident and interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from incidents.models import EventKind, ImpactSample, Notification
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(what: str, now: datetime, processes: int = 3) -> list[int]:
    db = connection.settings_dict
    env = os.environ | {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": "memory://",
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": "",
        "SLACK_WEBHOOK_URL": "",
        "NOTIFY_WEBHOOK_URL": "",
    }
    start = time.time() + 4  # after every process has started and connected
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.impact.beat_race", what, now.isoformat(), str(start)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    made = []
    for child in children:
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err
        made.append(json.loads(out.strip().splitlines()[-1])["made"])
    return made


def test_three_beat_processes_escalate_a_regulatory_deadline_once(responder):
    weekly_rota()
    give_contacts_addresses()
    t0 = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
    incident = factories.declare(
        actor=responder, category="security", flags=["data_breach"], now=t0
    )
    deadline = incident.regulatory_clocks.get().deadline
    made = race("regulatory", deadline)
    rows = list(
        incident.notifications.filter(kind=Notification.REGULATORY).values_list(
            "recipient_key", "channel", "reason"
        )
    )
    assert len(rows) == len(set(rows)) >= 2  # the reminder and the deadline, once each
    assert {r[2] for r in rows} == {
        "regulatory-data_breach-warn",
        "regulatory-data_breach-due",
    }
    assert sorted(made)[-1] >= 1 and sorted(made)[:-1] == [0] * (len(made) - 1)
    assert incident.timeline.filter(kind=EventKind.ESCALATION, data__has_key="clock").count() == 1


def test_three_beat_processes_store_one_money_sample(platform, responder):
    incident = factories.declare(actor=responder, category="payment")
    made = race("money", datetime.now(UTC) - timedelta(seconds=1))
    assert sorted(made) == [0, 0, 1]
    assert ImpactSample.objects.filter(incident=incident).count() == 1
