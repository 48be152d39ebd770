"""Live fan-out: N open streams, and the time from a note's POST to its arrival at
every one of them.

    .venv/bin/python bench/bench_live.py [--mode production|embedded|both]
        [--sizes 10,100,500,1000] [--layouts one,spread] [--notes 8] [--outputs 8] [--idle 5]
        [--database-url postgres://postgres@127.0.0.1:5432/lotoops_bench_live]
        [--redis-url redis://127.0.0.1:6379/6]

One web process (uvicorn, the real ASGI app) on a throwaway database: PostgreSQL
(`lotoops_bench_live`, dropped and created again) and Redis for "production", a
SQLite file in a temp dir and no Redis for "embedded". For each N and layout (all
streams on one incident, or spread over 50), the script opens N SSE streams
(plain asyncio sockets, so the client stays light on this shared machine), lets
them idle and measures the web process (CPU over --idle seconds, RSS, threads) and
the connections it holds (PostgreSQL backends on the bench database, Redis
clients by name), then POSTs --notes notes through the incident page's form, one
every 0.5 s, and times each note's arrival at every stream that should get it;
then appends --outputs lines to a running check's output (each incident has one),
one every 0.5 s, as a worker does (the row, then a Redis wake-up), and times each
line's arrival the same way, with the web process's CPU per line.
Lost = expected arrivals that never came (10 s grace); doubled = arrivals twice.
Everything listens on 127.0.0.1; every process it starts is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PASSWORD = "bench-" + uuid.uuid4().hex
INCIDENTS = 50
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SETUP = """
from django.contrib.auth import get_user_model
from incidents import services
from incidents.models import Severity
from incidents.seed import seed_runbook
seed_runbook()
User = get_user_model()
user = User.objects.create_superuser("bench", "bench@example.com", {password!r})
sev = Severity.objects.get(key="P2")
from diagnostics.models import CheckRun, RunbookStep
from diagnostics.seed import seed_runbooks
seed_runbooks()
step = RunbookStep.objects.filter(kind="diagnostic").order_by("pk").first()
for n in range({incidents}):
    incident = services.declare_incident(
        title=f"Bench incident {{n}}", category="payment", severity=sev, actor=user
    )
    CheckRun.objects.create(incident=incident, step=step, status="running", output="started\\n")
"""
# Output lines are numbered from here, in the notes' pattern.
OUTPUT_BASE = 1000


@dataclass
class Run:
    mode: str
    layout: str
    n: int
    latencies_ms: list[float] = field(default_factory=list)
    lost: int = 0
    doubled: int = 0
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    threads: int = 0
    pg: str = "-"
    redis: str = "-"
    open_s: float = 0.0
    post_ms: list[float] = field(default_factory=list)
    cpu_per_note_ms: float = 0.0
    output_ms: list[float] = field(default_factory=list)
    output_lost: int = 0
    cpu_per_output_ms: float = 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies_ms if values is None else values)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_stats(pid: int) -> tuple[float, float, int]:
    """CPU seconds (user + system), RSS in MB and thread count of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return cpu, rss, threads


def pg_connections(url: str) -> str:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()
    return str(row[0])


def redis_connections(url: str, prefix: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        names = [c.get("name", "") for c in client.client_list()]
    finally:
        client.close()
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        if name.startswith(prefix + ":"):
            counts[name.removeprefix(prefix + ":")] += 1
    return " ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "0"


def prepare_postgres(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("lotoops_bench_live") or parts.hostname not in (HOST, "localhost"):
        sys.exit("the database is dropped and recreated: use lotoops_bench_live… on 127.0.0.1")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_postgres(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(parts.path.lstrip("/"))
            )
        )


# --- a light SSE client ------------------------------------------------------------


class Streams:
    """N SSE streams over raw asyncio sockets; records when each bench note arrives."""

    def __init__(self, port: int, cookie: str, marker: str) -> None:
        self.port = port
        self.cookie = cookie
        self.marker = marker
        self.pattern = re.compile(rf"{marker}-(\d+) fan-out".encode())
        # note number -> stream index -> arrival times
        self.arrivals: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, index: int, incident_id: int) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 30)
        self.writers.append(writer)
        writer.write(
            (
                f"GET /incidents/{incident_id}/stream/ HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                f"Cookie: {self.cookie}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"stream answered {head[:80]!r}")
        await asyncio.wait_for(reader.readuntil(b"retry:"), 60)
        self.tasks.append(asyncio.create_task(self._read(index, reader)))

    async def _read(self, index: int, reader: asyncio.StreamReader) -> None:
        """Scan raw chunks (no line parsing: the client shares the machine's two cores
        with the server, so it must stay cheap). A marker cut by a chunk boundary is
        found in the next round: the last bytes are kept, and a match is counted only
        if it ends in the new bytes."""
        tail = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.monotonic()
            data = tail + chunk
            for match in self.pattern.finditer(data):
                if match.end() > len(tail):
                    self.arrivals[int(match.group(1))][index].append(now)
            tail = data[-80:]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        self.tasks, self.writers = [], []


def login(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=10)
    answer = session.post(
        f"{base}/login/",
        data={
            "username": "bench",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        timeout=10,
        allow_redirects=False,
    )
    if answer.status_code != 302:
        raise RuntimeError(f"login failed: {answer.status_code}")
    return session


async def one_run(
    run: Run, base: str, port: int, pid: int, session: requests.Session, args: argparse.Namespace
) -> None:
    marker = f"bench{uuid.uuid4().hex[:6]}"
    cookie = f"sessionid={session.cookies['sessionid']}"
    streams = Streams(port, cookie, marker)
    incidents = list(range(1, INCIDENTS + 1))
    placement = [
        incidents[0] if run.layout == "one" else incidents[i % INCIDENTS] for i in range(run.n)
    ]
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        for offset in range(0, run.n, 100):
            await asyncio.gather(
                *(streams.open(i, placement[i]) for i in range(offset, min(run.n, offset + 100)))
            )
        run.open_s = time.monotonic() - started
        await asyncio.sleep(2)  # settle: the replays are sent, the pools are back
        cpu0, _, _ = proc_stats(pid)
        await asyncio.sleep(args.idle)
        cpu1, run.rss_mb, run.threads = proc_stats(pid)
        run.cpu_pct = 100 * (cpu1 - cpu0) / args.idle
        if args.mode_now == "production":
            run.pg = pg_connections(args.database_url)
            run.redis = redis_connections(args.redis_url, args.prefix)
        posted: dict[int, float] = {}
        targets: dict[int, int] = {}
        cpu_before, _, _ = proc_stats(pid)
        for k in range(args.notes):
            incident = placement[0] if run.layout == "one" else incidents[k % INCIDENTS]
            targets[k] = incident
            posted[k] = time.monotonic()
            answer = await loop.run_in_executor(
                None,
                lambda i=incident, k=k: session.post(
                    f"{base}/incidents/{i}/notes/",
                    data={"text": f"{marker}-{k} fan-out"},
                    headers={"X-CSRFToken": session.cookies["csrftoken"]},
                    timeout=30,
                    allow_redirects=False,
                ),
            )
            if answer.status_code != 302:
                raise RuntimeError(f"note POST answered {answer.status_code}")
            run.post_ms.append(1000 * (time.monotonic() - posted[k]))
            await asyncio.sleep(0.5)
        expected = {
            k: [i for i in range(run.n) if placement[i] == targets[k]] for k in range(args.notes)
        }
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(len(streams.arrivals[k].get(i, [])) >= 1 for k in expected for i in expected[k]):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything doubled arrives now
        # The web process's CPU for each note: the POST and the fan-out to every stream.
        # Unlike the latencies, it hardly depends on what else the machine runs.
        run.cpu_per_note_ms = 1000 * (proc_stats(pid)[0] - cpu_before) / args.notes
        for k, indexes in expected.items():
            for i in indexes:
                times = streams.arrivals[k].get(i, [])
                if not times:
                    run.lost += 1
                    continue
                run.doubled += len(times) - 1
                run.latencies_ms.append(1000 * (times[0] - posted[k]))
        if args.outputs:
            await output_phase(run, streams, placement, pid, args)
    finally:
        await streams.close()
        await asyncio.sleep(1)


def append_output(args: argparse.Namespace, incident_id: int, line: str) -> None:
    """What a worker does when a check run prints a line: the row (its version bumped),
    then a wake-up of the incident's streams (Redis; without it, their poll sees it)."""
    if args.mode_now == "production":
        import psycopg
        import redis

        with psycopg.connect(args.database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "UPDATE diagnostics_checkrun SET output = output || %s, version = version + 1"
                " WHERE incident_id = %s",
                [line + "\n", incident_id],
            )
        client = redis.Redis.from_url(args.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(f"{args.prefix}:timeline:{incident_id}", "0")
        finally:
            client.close()
    else:
        import sqlite3

        with sqlite3.connect(args.sqlite_path, timeout=10) as conn:
            conn.execute(
                "UPDATE diagnostics_checkrun SET output = output || ?, version = version + 1"
                " WHERE incident_id = ?",
                [line + "\n", incident_id],
            )


async def output_phase(
    run: Run, streams: Streams, placement: list[int], pid: int, args: argparse.Namespace
) -> None:
    """--outputs lines of a running check's output, one every 0.5 s: the time from the
    write to its arrival at every stream of the incident, and the web process's CPU."""
    incidents = list(range(1, INCIDENTS + 1))
    loop = asyncio.get_running_loop()
    written: dict[int, float] = {}
    targets: dict[int, int] = {}
    cpu_before, _, _ = proc_stats(pid)
    for k in range(OUTPUT_BASE, OUTPUT_BASE + args.outputs):
        incident = placement[0] if run.layout == "one" else incidents[k % INCIDENTS]
        targets[k] = incident
        written[k] = time.monotonic()
        line = f"{streams.marker}-{k} fan-out"
        await loop.run_in_executor(None, append_output, args, incident, line)
        await asyncio.sleep(0.5)
    expected = {k: [i for i in range(run.n) if placement[i] == t] for k, t in targets.items()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(len(streams.arrivals[k].get(i, [])) >= 1 for k in expected for i in expected[k]):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    run.cpu_per_output_ms = 1000 * (proc_stats(pid)[0] - cpu_before) / args.outputs
    for k, indexes in expected.items():
        for i in indexes:
            times = streams.arrivals[k].get(i, [])
            if not times:
                run.output_lost += 1
                continue
            run.output_ms.append(1000 * (times[0] - written[k]))


def run_mode(mode: str, args: argparse.Namespace) -> list[Run]:
    args.mode_now = mode
    args.prefix = f"lotoops-bench-{uuid.uuid4().hex[:6]}"
    temp = Path(tempfile.mkdtemp(prefix="lotoops-bench-live-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "lotoops.settings",
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "LOTOOPS_VAR_DIR": str(temp),
        "SSE_CHANNEL_PREFIX": args.prefix,
        "SSE_MAX_DURATION": "3600",
        "CELERY_BROKER_URL": "memory://",  # nothing here needs a worker
        "LOG_LEVEL": "WARNING",
    }
    if mode == "production":
        prepare_postgres(args.database_url)
        env |= {"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url}
    else:
        env["DATABASE_URL"] = f"sqlite:///{temp / 'bench.sqlite3'}"
        args.sqlite_path = str(temp / "bench.sqlite3")
    python = sys.executable
    web = None
    try:
        subprocess.run(
            [python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
        )
        script = SETUP.format(password=PASSWORD, incidents=INCIDENTS)
        subprocess.run(
            [python, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        web = subprocess.Popen(
            [
                python,
                "-m",
                "uvicorn",
                "lotoops.asgi:application",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--lifespan",
                "off",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/login/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.2)
        session = login(base)
        runs = []
        for layout in args.layouts:
            for n in args.sizes:
                run = Run(mode, layout, n)
                asyncio.run(one_run(run, base, port, web.pid, session, args))
                print_row(run)
                runs.append(run)
        if mode == "production":
            time.sleep(2)
            print(
                f"  after all streams closed: PostgreSQL {pg_connections(args.database_url)},"
                f" Redis {redis_connections(args.redis_url, args.prefix)}"
            )
        return runs
    finally:
        if web is not None and web.poll() is None:
            web.send_signal(signal.SIGINT)
            try:
                web.wait(timeout=15)
            except subprocess.TimeoutExpired:
                web.kill()
                web.wait(timeout=10)
        if mode == "production":
            drop_postgres(args.database_url)
        shutil.rmtree(temp, ignore_errors=True)


HEADER = (
    f"{'mode':<11}{'layout':<8}{'N':>6}{'open s':>8}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}"
    f"{'POST':>6}{'CPU/note':>9}{'lost':>6}{'dbl':>5}{'idle CPU':>9}{'RSS MB':>8}{'thr':>5}"
    f"  {'PG':>3}  Redis"
)
OUTPUT_HEADER = (
    f"{'  run output':<25}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}{'CPU/line':>9}{'lost':>6}"
)


def print_row(run: Run) -> None:
    print(
        f"{run.mode:<11}{run.layout:<8}{run.n:>6}{run.open_s:>8.1f}{run.pct(0.5):>8.0f}"
        f"{run.pct(0.95):>8.0f}{max(run.latencies_ms, default=math.nan):>8.0f}"
        f"{statistics.median(run.post_ms) if run.post_ms else math.nan:>6.0f}"
        f"{run.cpu_per_note_ms:>7.0f}ms{run.lost:>6}"
        f"{run.doubled:>5}{run.cpu_pct:>8.1f}%{run.rss_mb:>8.0f}{run.threads:>5}  {run.pg:>3}"
        f"  {run.redis}",
        flush=True,
    )
    if run.output_ms or run.output_lost:
        print(
            f"{'  run output':<25}{run.pct(0.5, run.output_ms):>8.0f}"
            f"{run.pct(0.95, run.output_ms):>8.0f}{max(run.output_ms, default=math.nan):>8.0f}"
            f"{run.cpu_per_output_ms:>7.0f}ms{run.output_lost:>6}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["production", "embedded", "both"], default="both")
    parser.add_argument("--sizes", default="10,100,500,1000")
    parser.add_argument("--notes", type=int, default=8)
    parser.add_argument(
        "--outputs", type=int, default=8, help="lines of a running check's output (0: none)"
    )
    parser.add_argument("--layouts", default="one,spread", help="one: one incident; spread: 50")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/lotoops_bench_live"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.layouts = args.layouts.split(",")
    modes = ["production", "embedded"] if args.mode == "both" else [args.mode]
    print(
        f"{args.notes} notes per run, one every 0.5 s; latency = POST sent -> note at the stream"
        " (POST: p50 of the POST's own round trip; CPU/note: web process CPU per note);"
        f" idle CPU of the web process over {args.idle:.0f} s with the streams open"
    )
    print(HEADER)
    if args.outputs:
        print(OUTPUT_HEADER)
    for mode in modes:
        run_mode(mode, args)
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
