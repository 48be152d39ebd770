"""A double click on Run queues one run, even when the two requests reach two web
processes at the same moment: the second gets the first's run back (the incident's
row lock orders them; nothing process-local)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from diagnostics.models import CheckRun
from incidents.models import EventKind
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2  # the same person's double click, on two web processes


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_run_posted_by_several_processes_at_once_queues_one_run(
    responder, other_responder, testbook, api_target, tmp_path
):
    incident = factories.declare(
        actor=responder, category="database", title="Slow checkout", severity="P2"
    )
    url = f"/incidents/{incident.pk}/steps/test.diag/run/"
    settings_dict = connection.settings_dict
    env = os.environ | {
        "DATABASE_URL": (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
            f"{settings_dict['PORT']}/{settings_dict['NAME']}"
        ),
        "CELERY_BROKER_URL": "memory://",
        "PYTHONPATH": str(ROOT),
    }
    start = tmp_path / "go"  # every process waits for it, logged in and connected
    users = [responder] * PROCESSES + [other_responder]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.diagnostics.run_race", str(u.pk), url, str(start)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for u in users
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
        start.touch()
        answers = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert all(a["status"] == 200 for a in answers), answers
    mine = CheckRun.objects.get(requested_by=responder)  # one run, however many posts
    theirs = CheckRun.objects.get(requested_by=other_responder)  # another person: its own
    assert all(mine.pk in a["runs"] for a in answers[:PROCESSES]), answers
    assert theirs.pk in answers[-1]["runs"]
    assert incident.timeline.filter(kind=EventKind.CHECK_RUN).count() == 2
