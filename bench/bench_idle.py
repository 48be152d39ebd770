"""Idle cost of the embedded default run: CPU time each process spends while
nobody uses LotoOps (web, worker and its pool, beat, the supervisor).

Starts `python -m lotoops.embedded run` in a temp dir (SQLite, the filesystem
broker, no Redis), waits until /healthz sees the worker, lets it settle, then
reads utime+stime from /proc/<pid>/stat of every process at the start and the
end of a window and prints the share of one core each used. Goal: under 2 % of
one core in total.

    .venv/bin/python bench/bench_idle.py [--window 60]

With --production: the production processes instead, as docker-compose runs them, on
this machine's PostgreSQL (a scratch database, `lotoops_bench_idle`) and Redis (DB 8,
queues of their own): the web server (one uvicorn process), a worker per queue class
(paging x2, checks x4, long x2 processes) and beat (with its lock). PostgreSQL and
Redis serve the other engineers too, so their own CPU is not counted; their share at
idle is the queries the processes above make (beat's heartbeat and sweeps every 15 s,
the workers' broker polls: Redis BRPOP, no polling of the database).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_pages  # noqa: E402  (its embedded-run helpers)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def production_run(measure) -> None:  # noqa: ANN001
    """Start the production processes (web, a worker per queue class, beat) under one
    session, call `measure(pid)` per process tree once they are idle, stop them."""
    import psycopg

    database = "lotoops_bench_idle"
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{database}"')
    queue = f"lotoops-idle-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": "redis://127.0.0.1:6379/8",
        "CELERY_DEFAULT_QUEUE": queue,
        "LOTOOPS_VAR_DIR": tempfile.mkdtemp(prefix="lotoops-idle-"),
        "LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([python, "manage.py", "seed_runbook", "-v0"], cwd=ROOT, env=env, check=True)
    celery = [python, "-m", "celery", "-A", "lotoops"]
    commands = {
        "web (uvicorn)": [
            python,
            "-m",
            "uvicorn",
            "lotoops.asgi:application",
            "--host=127.0.0.1",
            "--port=0",
            "--log-level=warning",
        ],
        "worker-paging": [
            *celery,
            "worker",
            "--concurrency=2",
            f"--queues={queue}.paging",
            "--hostname=paging@idle",
            "--loglevel=WARNING",
        ],
        "worker-checks": [
            *celery,
            "worker",
            "--concurrency=4",
            f"--queues={queue}.checks,{queue}",
            "--hostname=checks@idle",
            "--loglevel=WARNING",
        ],
        "worker-long": [
            *celery,
            "worker",
            "--concurrency=2",
            f"--queues={queue}.long",
            "--hostname=long@idle",
            "--loglevel=WARNING",
        ],
        "beat": [*celery, "beat", "--loglevel=WARNING"],
    }
    processes = {
        role: subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, command in commands.items()
    }
    try:
        time.sleep(30)  # start-up, first heartbeats and sweeps
        for role, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{role} exited at start-up")
        measure_all = {}
        for role, process in processes.items():
            for pid, _parent in bench_pages.descendants(process.pid):
                label = role if pid == process.pid else f"{role} pool child"
                measure_all[pid] = label
        measure(measure_all)
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--production", action="store_true")
    args = parser.parse_args()
    samples: dict[int, tuple[str, float]] = {}
    result: list[tuple[str, float]] = []

    def measure(runner: int | dict[int, str]) -> None:
        if isinstance(runner, dict):  # production: each process already labelled
            for pid, role in runner.items():
                samples[pid] = (role, cpu_seconds(pid))
        else:
            for pid, parent in bench_pages.descendants(runner):
                samples[pid] = (bench_pages._label(pid, parent, runner), cpu_seconds(pid))
        time.sleep(args.window)
        for pid, (role, before) in samples.items():
            try:
                result.append((role, cpu_seconds(pid) - before))
            except OSError:
                result.append((f"{role} (exited)", 0.0))

    if args.production:
        production_run(measure)
        what = "production processes"
    else:
        bench_pages.with_embedded_run(measure, timeout=90, idle=10)
        what = "embedded default"
    load = os.getloadavg()
    print(f"{what} at idle, {args.window:g} s window; load average {load[0]:.2f}")
    print(f"{'process':28} {'CPU s':>7} {'% of a core':>12}")
    total = 0.0
    for role, seconds in sorted(result):
        share = 100 * seconds / args.window
        total += share
        print(f"{role:28} {seconds:7.2f} {share:11.2f}%")
    print(f"{'total':28} {'':7} {total:11.2f}%   goal < 2 %: {'yes' if total < 2 else 'no'}")


if __name__ == "__main__":
    main()
