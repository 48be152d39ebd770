"""LotoOps's own observability: /metrics (token-protected, figures from the
database), JSON log lines with the incident and check run they are about, and the
Prometheus rule file for LotoOps's own alerts (checked with promtool)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from diagnostics.models import CheckRun, WorkerHeartbeat
from incidents import services
from incidents.models import Notification, Status
from tests import factories
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus"
TOKEN = "metrics-token-4f1b"


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_are_off_without_a_token_and_refuse_a_wrong_one(client, settings, db):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [TOKEN, f"Basic {TOKEN}", f"Token {TOKEN}", f"Bearer{TOKEN}"])
def test_metrics_take_the_token_only_as_a_bearer_token(client, settings, db, header):
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", headers={"Authorization": header}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_metrics_count_what_the_database_holds(client, settings, responder):
    settings.METRICS_TOKEN = TOKEN
    now = timezone.now()
    late = factories.declare(
        actor=responder, severity="P1", title="Late", now=now - timedelta(hours=2)
    )
    factories.declare(actor=responder, severity="P1", title="Fresh")
    done = factories.declare(actor=responder, severity="P2", title="Done")
    services.acknowledge_incident(done, actor=responder)
    services.transition_incident(done, Status.INVESTIGATING, actor=responder)
    services.transition_incident(done, Status.RESOLVED, actor=responder)
    Notification.objects.create(
        incident=late, recipient_key="channel", recipient="#x", channel="webhook",
        reason="test-failed", subject="s", text="t", status="failed",
    )  # fmt: skip
    WorkerHeartbeat.objects.create(hostname="worker@a", seen_at=now)
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(response)
    assert got[("lotoops_open_incidents", (("severity", "P1"),))] == 2
    assert got[("lotoops_open_incidents", (("severity", "P2"),))] == 0
    assert got[("lotoops_sla_breached_incidents", (("severity", "P1"),))] == 1
    assert got[("lotoops_time_to_acknowledge_seconds_count", ())] == 1
    assert got[("lotoops_notifications", (("status", "failed"),))] == 1
    assert got[("lotoops_workers_up", ())] == 1
    assert (
        got[("lotoops_queue_depth", (("queue", "checks"),))]
        == CheckRun.objects.filter(status="queued").count()
    )
    assert ("lotoops_live_streams", ()) in got


def test_the_rules_reference_only_metrics_lotoops_exports(client, settings, db):
    settings.METRICS_TOKEN = TOKEN
    exported = {
        name
        for name, _ in samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}))
    }
    exprs = re.findall(r"expr: (.+)", (RULES / "lotoops-rules.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"\b(lotoops_[a-z_]+)", e)}
    assert used and used <= exported


def test_the_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool (Debian's prometheus package) is needed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [promtool, "test", "rules", "lotoops-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_json_log_lines_carry_the_incident_and_the_check_run():
    script = (
        "import logging, django; django.setup();"
        "from incidents import logcontext;"
        "log = logging.getLogger('lotoops.test');"
        "ctx = logcontext.bind(check_run=7);"
        "ctx.__enter__(); logcontext.add(incident=42); log.warning('probe started');"
        "ctx.__exit__(None, None, None); log.warning('outside')"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "lotoops.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    inside, outside = lines[-2], lines[-1]
    assert inside["message"] == "probe started" and inside["level"] == "WARNING"
    assert inside["incident"] == 42 and inside["check_run"] == 7
    assert inside["logger"] == "lotoops.test" and "time" in inside
    assert outside["incident"] is None and outside["check_run"] is None
