"""A confirmation queues its action once: a replayed token, posted again or by
several processes at the same moment, is refused with the run it already made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from diagnostics import actions
from diagnostics.models import CheckRun
from incidents.models import EventKind, Incident, Status
from tests import factories
from tests.diagnostics.conftest import step

HX = {"HTTP_HX_REQUEST": "true"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def operator(responder):
    responder.user_permissions.add(Permission.objects.get(codename="run_actions"))
    return type(responder).objects.get(pk=responder.pk)


@pytest.fixture
def db_incident(responder, testbook, api_target):
    return factories.declare(
        actor=responder, category="database", title="Slow checkout queries", severity="P2"
    )


@pytest.mark.django_db
def test_a_replayed_confirmation_is_refused_with_the_run_it_made(
    client, db_incident, operator, api_target
):
    client.force_login(operator)
    url = f"/incidents/{db_incident.pk}/steps/test.act/action/"
    token = client.post(url, {"stage": "review", "target": api_target.pk}).context["token"]
    first = client.post(url, {"stage": "confirm", "token": token}, **HX)
    assert first.status_code == 200
    run = CheckRun.objects.get()
    for _ in range(2):
        replay = client.post(url, {"stage": "confirm", "token": token}, **HX)
        assert replay.status_code == 422
        assert (
            f"This confirmation was already used: the action ran as check run #{run.pk}."
            in replay.content.decode()
        )
    assert CheckRun.objects.count() == 1
    assert db_incident.timeline.filter(kind=EventKind.ACTION).count() == 1


@pytest.mark.django_db
def test_a_refused_confirmation_is_not_spent(db_incident, operator, api_target):
    """Nothing ran (the incident was resolved): the same confirmation works once reopened."""
    review = actions.review(db_incident, step("act"), api_target, {})
    Incident.objects.filter(pk=db_incident.pk).update(status=Status.RESOLVED)
    with pytest.raises(actions.services.CheckError, match="not open"):
        actions.confirm(Incident.objects.get(), step("act"), review.token, actor=operator)
    assert not CheckRun.objects.exists()
    Incident.objects.filter(pk=db_incident.pk).update(status=Status.INVESTIGATING)
    run = actions.confirm(Incident.objects.get(), step("act"), review.token, actor=operator)
    assert run.plan == "restart 7 workers on lotolink-api"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_token_posted_by_several_processes_at_once_runs_once(
    db_incident, operator, api_target
):
    review = actions.review(db_incident, step("act"), api_target, {})
    url = f"/incidents/{db_incident.pk}/steps/test.act/action/"
    settings_dict = connection.settings_dict
    env = os.environ | {
        "DATABASE_URL": (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
            f"{settings_dict['PORT']}/{settings_dict['NAME']}"
        ),
        "CELERY_BROKER_URL": "memory://",
        "PYTHONPATH": str(ROOT),
    }
    start = time.time() + 4  # after every process has started and logged in
    race_args = [str(operator.pk), url, review.token, str(start)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.diagnostics.confirm_race", *race_args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(json.loads(out.strip().splitlines()[-1]))

    assert sorted(a["status"] for a in answers) == [200, 422, 422, 422], answers
    run = CheckRun.objects.get()
    refused = [a["body"] for a in answers if a["status"] == 422]
    expected = f"This confirmation was already used: the action ran as check run #{run.pk}."
    assert all(expected in body for body in refused), refused
    assert db_incident.timeline.filter(kind=EventKind.ACTION).count() == 1
