"""Check-run throughput for 1, 2 and 4 worker processes, straight to PostgreSQL and
through PgBouncer in transaction mode.

    .venv/bin/python bench/bench_scale.py [--runs 400] [--workers 1,2,4] [--modes direct,pgbouncer]

A scratch database on this machine's PostgreSQL (`lotoops_bench_scale`, made afresh),
the Redis broker (DB 8, a queue of its own), and a loopback HTTP endpoint answering at
once: each run is the runbook's `init.health` (the http.health probe) against it, so
what is measured is the engine's own work per run (claim, load, probe, output, result,
timeline). For each setting the runs are saved first (spread over 20 incidents, as
"Run all" of several incidents would), a real Celery worker (prefork, N processes) is
started, and once it is up every run is sent at once; throughput is the number of runs
over the time from the first run's start to the last one's finish (database
timestamps), and the worker's CPU time (all its processes, /proc) per run. With
PgBouncer the bench starts its own (tests/own_servers.py)
on a free loopback port, transaction pooling, 20 server connections, and the workers
run with DATABASE_PGBOUNCER=true.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
sys.path.insert(0, str(ROOT / "bench"))

PG_HOST, PG_PORT = "127.0.0.1", 5432
DB = "lotoops_bench_scale"
REDIS = "redis://127.0.0.1:6379/8"
QUEUE = f"lotoops-scale-{uuid.uuid4().hex[:6]}"


class Endpoint(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def fresh_database() -> None:
    import psycopg

    with psycopg.connect(f"postgres://postgres@{PG_HOST}:{PG_PORT}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{DB}"')


def worker_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a worker's main process and of its pool processes."""
    import bench_pages

    main, pool = 0.0, 0.0
    for process, _ in bench_pages.descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if process == pid:
                main += seconds
            else:
                pool += seconds
    return main, pool


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen[bytes]:
    from diagnostics.queues import all_queues

    command = [
        sys.executable, "-m", "celery", "-A", "lotoops", "worker", "--loglevel", "WARNING",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "--queues", ",".join(all_queues(QUEUE)),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--modes", default="direct,pgbouncer")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    modes = args.modes.split(",")

    fresh_database()
    var_dir = tempfile.mkdtemp(prefix="lotoops-bench-scale-")
    direct_url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{DB}"
    base_env = {
        **os.environ,
        "DATABASE_URL": direct_url,
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        "CELERY_DEFAULT_QUEUE": QUEUE,
        # The bench's peers listen on loopback, which targets may not point at by default.
        "TARGET_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOTOOPS_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(base_env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db.models import Max, Min
    from django.utils import timezone

    from diagnostics import queues
    from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target, WorkerHeartbeat
    from diagnostics.tasks import run_check
    from incidents.models import Severity
    from incidents.services import declare_incident
    from lotoops.celery import app
    from tests.own_servers import own_pgbouncer

    app.conf.task_default_queue = QUEUE
    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = Target.objects.create(
        name="lotolink-api", kind="http", url=f"http://127.0.0.1:{server.server_port}/health"
    )
    user = get_user_model().objects.create_user("bench")
    p2 = Severity.objects.get(key="P2")
    incidents = [
        declare_incident(title=f"Scale {n}", category="database", severity=p2, actor=user)
        for n in range(20)
    ]
    step = RunbookStep.objects.get(key="init.health")
    started = timezone.now()

    def measure(env: dict[str, str], workers: int, runs: int) -> tuple[float, int, float, float]:
        """(runs/s, runs ok, CPU ms per run of the worker's main process, of its pool)."""
        # Saved as queued runs (as Run saves them: Run again of the same step on the
        # same target returns the queued run, so rows are made directly), sent to the
        # broker only once the worker is up.
        made = CheckRun.objects.bulk_create(
            CheckRun(
                incident=incidents[n % len(incidents)],
                step=step,
                target=target,
                target_name=target.name,
                requested_by=user,
                params=step.params,
            )
            for n in range(runs)
        )
        ids = [run.pk for run in made]
        worker = start_worker(env, workers)
        try:
            deadline = time.monotonic() + 60
            while not WorkerHeartbeat.objects.filter(seen_at__gte=started).exists():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the worker did not start")
                time.sleep(0.2)
            time.sleep(1)
            before = worker_cpu(worker.pid)
            queue = queues.for_check(step.probe, step.timeout_seconds)
            for run_id in ids:
                run_check.apply_async((run_id,), queue=queue)
            deadline = time.monotonic() + 120 + runs / 5
            pending = CheckRun.objects.filter(pk__in=ids, finished_at__isnull=True)
            while pending.exists():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the runs did not finish")
                time.sleep(0.1)
            after = worker_cpu(worker.pid)
        finally:
            stop(worker)
        done = CheckRun.objects.filter(pk__in=ids)
        span = done.aggregate(first=Min("started_at"), last=Max("finished_at"))
        seconds = (span["last"] - span["first"]).total_seconds()
        ok = done.filter(status=RunStatus.SUCCEEDED, outcome="ok").count()
        main_ms, pool_ms = ((a - b) * 1000 / runs for a, b in zip(after, before, strict=True))
        return runs / seconds, ok, main_ms, pool_ms

    results: list[tuple[str, int, float, int]] = []
    try:
        for mode in modes:
            with contextlib.ExitStack() as stack:
                env = dict(base_env)
                if mode == "pgbouncer":
                    port = stack.enter_context(own_pgbouncer(PG_HOST, PG_PORT, pool_size=20))
                    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{port}/{DB}"
                    env["DATABASE_PGBOUNCER"] = "true"
                measure(env, 1, 20)  # warm-up: imports, connections, caches
                for workers in counts:
                    rate, ok, main_ms, pool_ms = measure(env, workers, args.runs)
                    results.append((mode, workers, rate, ok, main_ms, pool_ms))
                    print(f"  {mode:<10} {workers} processes: {rate:6.1f} runs/s", flush=True)
    finally:
        server.shutdown()

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nCheck-run throughput, {args.runs} init.health runs (HTTP, loopback) per setting")
    print("CPU ms per run: the worker's main process (broker, acks, hand-off to the pool)")
    print("and its pool processes (the task: bookkeeping and the check)")
    head = f"{'database':<12}{'processes':>10}{'runs/s':>10}{'ok':>10}"
    print(f"{head}{'main ms':>10}{'pool ms':>10}")
    for mode, workers, rate, ok, main_ms, pool_ms in results:
        line = f"{mode:<12}{workers:>10}{rate:>10.1f}{f'{ok}/{args.runs}':>10}"
        print(f"{line}{main_ms:>10.1f}{pool_ms:>10.1f}")
    print(f"load average after: {load} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
