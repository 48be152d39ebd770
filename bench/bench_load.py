"""128 connections against one web process: no 5xx but the in-flight cap's 503s,
bounded latency.

    .venv/bin/python bench/bench_load.py [--connections 128] [--seconds 20] [--incidents 1000]

A scratch database on this machine's PostgreSQL (`lotoops_bench_load`, made afresh and
seeded with `seed_demo --incidents N --big-timeline 500`), Redis, and the real ASGI app
under uvicorn in a subprocess, started as the Dockerfile starts it (one process, which
keeps TCP_NODELAY), with its pool of 10 connections and so at most 10 requests in
Django at once (lotoops/inflight.py); the rest wait up to WEB_QUEUE_WAIT (5 s). The
client (asyncio, raw HTTP/1.1 keep-alive, one logged-in session) keeps C connections
busy for S seconds, each asking the dashboard and the big incident's page in turn.
It prints the answers by status and the latency percentiles per page, then 200
sequential `/healthz` on one keep-alive connection (with TCP_NODELAY off, each would
take about 40 ms more: uvicorn issue #3149).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
DB = "lotoops_bench_load"
REDIS = "redis://127.0.0.1:6379/8"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def get(reader, writer, path: str, cookie: str) -> tuple[int, bytes]:  # noqa: ANN001
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: sessionid={cookie}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


async def load(port: int, cookie: str, pages: list[str], connections: int, seconds: float):  # noqa: ANN201
    results: dict[str, list[tuple[int, float]]] = defaultdict(list)
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        try:
            while time.monotonic() < deadline:
                path = pages[i % len(pages)]
                i += 1
                started = time.perf_counter()
                try:
                    status, _ = await get(reader, writer, path, cookie)
                except (asyncio.IncompleteReadError, ConnectionError):
                    results[path].append((0, time.perf_counter() - started))
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                results[path].append((status, time.perf_counter() - started))
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(connections)))
    return results


async def sequential(port: int, cookie: str, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        _status, _ = await get(reader, writer, "/healthz", cookie)
        times.append((time.perf_counter() - started) * 1000)
    writer.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--incidents", type=int, default=1000)
    args = parser.parse_args()

    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    var_dir = tempfile.mkdtemp(prefix="lotoops-bench-load-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{DB}",
        "REDIS_URL": REDIS,
        "LOTOOPS_VAR_DIR": var_dir,
        "DJANGO_SETTINGS_MODULE": "lotoops.settings",
        "LOG_LEVEL": "ERROR",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from incidents.models import Incident

    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)
    call_command("seed_demo", incidents=args.incidents, big_timeline=500, verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x" * 12)
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    big = Incident.objects.order_by("-pk").first()
    pages = ["/", f"/incidents/{big.pk}/"]

    port = 8700 + os.getpid() % 200
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "lotoops.asgi:application",
            "--host=127.0.0.1",
            f"--port={port}",
            "--log-level=warning",
            "--lifespan=off",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(sequential(port, cookie, 5))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        healthz = asyncio.run(sequential(port, cookie, 200))
        results = asyncio.run(load(port, cookie, pages, args.connections, args.seconds))
    finally:
        os.killpg(web.pid, signal.SIGINT)
        try:
            web.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)

    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    total = sum(len(v) for v in results.values())
    print(
        f"\n{args.connections} connections for {args.seconds:g} s, one uvicorn process "
        f"(pool 10, WEB_MAX_INFLIGHT 10, WEB_QUEUE_WAIT 5 s): {total} answers, "
        f"{total / args.seconds:.1f}/s"
    )
    print(
        f"{'page':<22}{'status':>8}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for path, answers in results.items():
        by_status = defaultdict(list)
        for status, took in answers:
            by_status[status].append(took * 1000)
        for status, times in sorted(by_status.items()):
            name = "dashboard /" if path == "/" else "incident (500 ev.)"
            print(
                f"{name:<22}{status:>8}{len(times):>8}{pct(times, 0.5):>9.0f}"
                f"{pct(times, 0.95):>9.0f}{pct(times, 0.99):>9.0f}{max(times):>9.0f}"
            )
    statuses = Counter(status for answers in results.values() for status, _ in answers)
    five = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    print(f"statuses: {dict(statuses)}; 5xx other than the cap's 503: {five or 'none'}")
    print(
        f"/healthz, 200 sequential on one keep-alive connection: p50 {pct(healthz, 0.5):.1f} ms,"
        f" p95 {pct(healthz, 0.95):.1f} ms"
    )
    print(f"load average after: {load_avg} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
