"""Runbook engine latency with the Redis broker and a real Celery worker.

    .venv/bin/python bench/bench_engine.py [--runs 40] [--repeats 5]

Measures, on this machine's PostgreSQL (our database and a scratch "platform"
database), Redis (broker + wake-ups), RabbitMQ and local HTTP endpoints:

- Run-to-first-output and Run-to-result of one diagnostic (api.db_connectivity),
  from the moment the run is committed (Run pressed) to the moment its first
  output line / its result is in the database, polled every 2 ms;
- "Run all diagnostics" of three procedures: wall time from the click to the last
  result, against the sum of the steps' own times and the slowest step.

Everything runs on 127.0.0.1 and cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/13"
QUEUE = f"lotoops-bench-{uuid.uuid4().hex[:6]}"
SLOW = {"/api/health": 0.5, "/banca/1/health": 0.4, "/banca/2/health": 0.3, "/banca/3/health": 0.2}


def ensure_database(name: str, *, fresh: bool) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


class Endpoint(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(SLOW.get(self.path, 0))
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def start_worker(env: dict[str, str], queue: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
    """A real Celery worker (prefork, `concurrency` processes) consuming only `queue` and the
    queues by class named after it (paging, checks, long: diagnostics/queues.py)."""
    from diagnostics.queues import all_queues

    env = {**env, "CELERY_DEFAULT_QUEUE": queue}
    command = [
        sys.executable, "-m", "celery", "-A", "lotoops", "worker", "--loglevel", "WARNING",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "--queues", ",".join(all_queues(queue)),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(predicate, timeout: float = 30.0, every: float = 0.002):  # noqa: ANN001, ANN201
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("benchmark step did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    ensure_database("lotoops_bench_engine", fresh=True)
    ensure_database("lotoops_bench_platform", fresh=False)
    var_dir = tempfile.mkdtemp(prefix="lotoops-bench-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/lotoops_bench_engine",
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        # The bench's peers listen on loopback, which targets may not point at by default.
        "TARGET_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOTOOPS_VAR_DIR": var_dir,
        "LOTOOPS_TARGET_BENCH_RABBIT_PASSWORD": "guest",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from diagnostics import services
    from diagnostics.models import CheckRun, Runbook, RunbookStep, Target
    from incidents.models import Severity
    from incidents.services import declare_incident
    from lotoops.celery import app

    app.conf.task_default_queue = QUEUE
    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE  # the queues by class are named after it
    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http = f"http://127.0.0.1:{server.server_address[1]}"
    Target.objects.create(name="lotolink-api", kind="http", url=f"{http}/api/health")
    for n in (1, 2, 3):
        Target.objects.create(name=f"banca-{n}", kind="banca", url=f"{http}/banca/{n}/health")
    Target.objects.create(name="lotolink-db", kind="postgres", url=f"{PG}/lotoops_bench_platform")
    Target.objects.create(
        name="lotolink-rabbitmq",
        kind="rabbitmq",
        url="amqp://guest@127.0.0.1:5672/",
        secret_env="LOTOOPS_TARGET_BENCH_RABBIT_PASSWORD",
    )
    for key in ("init.queue_depth", "pay.queues"):
        RunbookStep.objects.filter(key=key).update(
            params={"queues": ["bench"], "warning_depth": 10}
        )

    user = get_user_model().objects.create_user("bench")
    incident = declare_incident(
        title="Benchmark", category="database", severity=Severity.objects.get(key="P2"), actor=user
    )
    worker = start_worker(env, QUEUE)
    try:
        from diagnostics.models import WorkerHeartbeat

        wait(WorkerHeartbeat.objects.exists, timeout=60, every=0.2)
        step = RunbookStep.objects.get(key="api.db_connectivity")
        first_output: list[float] = []
        result: list[float] = []
        for n in range(args.runs + 3):
            (run,) = services.request_check(incident, step, actor=user)
            pressed = time.perf_counter()
            runs = CheckRun.objects.filter(pk=run.pk)
            wait(lambda runs=runs: runs.exclude(output="").exists())
            got_output = time.perf_counter()
            wait(lambda runs=runs: runs.filter(finished_at__isnull=False).exists())
            got_result = time.perf_counter()
            if n >= 3:  # warm-up
                first_output.append((got_output - pressed) * 1000)
                result.append((got_result - pressed) * 1000)

        rows = []
        for key in ("initial", "banca", "database"):
            book = Runbook.objects.get(key=key)
            walls, sums, slowest = [], [], []
            for _ in range(args.repeats):
                pressed = time.perf_counter()
                runs = services.run_all_diagnostics(incident, book, actor=user)
                ids = [r.pk for r in runs]
                wait(
                    lambda ids=ids: (
                        CheckRun.objects.filter(pk__in=ids, finished_at__isnull=True).count() == 0
                    )
                )
                walls.append((time.perf_counter() - pressed) * 1000)
                done = CheckRun.objects.filter(pk__in=ids)
                times = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in done]
                sums.append(sum(times))
                slowest.append(max(times))
            rows.append(
                (
                    key,
                    len(runs),
                    statistics.median(walls),
                    statistics.median(sums),
                    statistics.median(slowest),
                )
            )
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        server.shutdown()

    print(f"\nRunbook engine, Redis broker, 1 worker x 4 processes, {args.runs} runs")
    print(f"{'measure':<24}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, values in (("Run -> first output", first_output), ("Run -> result", result)):
        print(f"{name:<24}{pct(values, 0.5):>10.1f}{pct(values, 0.95):>10.1f}{max(values):>10.1f}")
    print(f"\n'Run all diagnostics' (median of {args.repeats})")
    head = ("procedure", "steps", "wall ms", "sum ms", "slowest ms", "wall/slowest")
    print(f"{head[0]:<12}{head[1]:>6}{head[2]:>10}{head[3]:>10}{head[4]:>12}{head[5]:>14}")
    for key, count, wall, total, slow in rows:
        print(f"{key:<12}{count:>6}{wall:>10.0f}{total:>10.0f}{slow:>12.0f}{wall / slow:>14.2f}")


if __name__ == "__main__":
    main()
