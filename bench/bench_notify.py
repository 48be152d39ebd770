"""Declaration -> first notification handed to the channel, with the Redis broker
and a real Celery worker.

    .venv/bin/python bench/bench_notify.py [--runs 60]

For each run the benchmark declares a P1 incident through the service (the clock
starts just before the call) and stops the clock when the loopback receiver gets
the first request for that incident: the signed webhook (the on-call page) and
Slack's Web API (conversations.create of the incident channel), both stand-ins on
127.0.0.1. Between the two: the on-commit `page_incident` task through Redis, the
Notification rows, one `deliver_notification` task per row, the claim, the send.

Uses this machine's PostgreSQL (a scratch database) and Redis; cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import PG, REDIS, ensure_database, pct, start_worker, wait  # noqa: E402

QUEUE = f"lotoops-bench-notify-{uuid.uuid4().hex[:6]}"
ARRIVED: dict[tuple[str, str], float] = {}


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        now = time.perf_counter()
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self.path == "/hook":
            ARRIVED.setdefault(("webhook", str(payload["incident"])), now)
            body = {"ok": True}
        elif self.path.endswith("conversations.create"):
            ARRIVED.setdefault(("slack", payload["name"]), now)
            body = {"ok": True, "channel": {"id": "C" + payload["name"][-6:]}}
        else:
            body = {"ok": True}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    ensure_database("lotoops_bench_notify", fresh=True)
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/lotoops_bench_notify",
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        "LOTOOPS_VAR_DIR": tempfile.mkdtemp(prefix="lotoops-bench-"),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_API_URL": f"{url}/api",
        "NOTIFY_WEBHOOK_URL": f"{url}/hook",
        "NOTIFY_WEBHOOK_SECRET": "bench-secret",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from incidents.models import Incident, Severity
    from incidents.services import declare_incident
    from lotoops.celery import app

    app.conf.task_default_queue = QUEUE
    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE  # the queues by class are named after it
    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    p1 = Severity.objects.get(key="P1")

    worker = start_worker(env, QUEUE)
    webhook: list[float] = []
    slack: list[float] = []
    try:
        from diagnostics.models import WorkerHeartbeat

        wait(WorkerHeartbeat.objects.exists, timeout=60, every=0.2)
        for n in range(args.runs + 3):
            started = time.perf_counter()
            incident = declare_incident(
                title=f"Bench {n} {uuid.uuid4().hex[:6]}",
                category="payment",
                severity=p1,
                actor=user,
            )
            channel = incident.channel_name.lstrip("#")
            wait(lambda i=incident: ("webhook", str(i.pk)) in ARRIVED, timeout=30, every=0.001)
            wait(lambda c=channel: ("slack", c) in ARRIVED, timeout=30, every=0.001)
            if n >= 3:  # warm-up
                webhook.append((ARRIVED[("webhook", str(incident.pk))] - started) * 1000)
                slack.append((ARRIVED[("slack", channel)] - started) * 1000)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        server.shutdown()
    # Only once the worker has stopped: it may still be recording deliveries.
    Incident.objects.all().delete()

    print(
        f"\nDeclaration -> first notification handed to the channel, Redis broker, "
        f"1 worker x 4 processes, {args.runs} incidents"
    )
    print(f"{'channel':<36}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, values in (
        ("signed webhook (on-call page)", webhook),
        ("Slack API (conversations.create)", slack),
    ):
        print(f"{name:<36}{pct(values, 0.5):>10.1f}{pct(values, 0.95):>10.1f}{max(values):>10.1f}")


if __name__ == "__main__":
    main()
