"""Page latency, queries per page and the embedded run's memory, on a throwaway database.

    .venv/bin/python bench/bench_pages.py [--incidents 10000] [--events 2000] [--requests 200]
        [--database-url postgres://127.0.0.1:5432/lotoops_bench]

Seeds a fresh database (SQLite in a temp dir by default), serves the real ASGI app
under uvicorn in a subprocess, and times sequential requests to /healthz, the
dashboard and the incident page with the big timeline. Then starts the embedded
default run (`python -m lotoops.embedded run`: web, Celery worker, beat) in another
temp dir and sums its resident memory once idle. Everything listens on 127.0.0.1
and everything it starts is stopped, and its temp dirs removed, before it exits.
See bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BENCH_DATABASES = {"lotoops_bench"}
MEMORY_GOAL_MB = 500
LATENCY_FACTOR = 5


@dataclass
class PageResult:
    name: str
    path: str
    times_ms: list[float]
    queries: int
    size: int

    def pct(self, q: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- small helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Call `check` until it returns something truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_process(proc: subprocess.Popen[bytes], sig: int, grace: float, group: bool) -> None:
    """Send `sig` (to the process group we created when `group`), then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _load() -> str:
    """The 1/5/15-minute load averages: on a shared machine they explain noisy figures."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the throwaway database ------------------------------------------------------------


def check_postgres_url(url: str) -> str | None:
    """Why the benchmark may not drop and recreate this database, or None if it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        return "--database-url must be a postgres:// URL"
    if parts.path.lstrip("/") not in BENCH_DATABASES:
        return f"the database is dropped and recreated: use one of {sorted(BENCH_DATABASES)}"
    if parts.hostname not in (HOST, "localhost"):
        return "the benchmark only talks to a database on 127.0.0.1"
    return None


def prepare_postgres(url: str) -> None:
    """Drop and recreate the bench database (throwaway by name, checked beforehand)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
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


def setup_django(database_url: str, var_dir: Path) -> None:
    """Point settings at the throwaway database and var dir, then set Django up."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["LOTOOPS_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    os.environ["DEBUG"] = "false"  # measure what production serves
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(incidents: int, events: int, seed_value: int) -> tuple[int, str, float]:
    """Migrate and seed; return the big incident's id, seed_demo's summary and the time."""
    from django.conf import settings
    from django.core.management import call_command

    for key in ("data_folder_in", "control_folder"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if folder:
            Path(str(folder)).mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("seed_runbook", stdout=StringIO())
    out = StringIO()
    started = time.perf_counter()
    call_command(
        "seed_demo",
        incidents=incidents,
        big_timeline=events,
        seed=seed_value,
        stdout=out,
    )
    took = time.perf_counter() - started
    summary = out.getvalue().strip()
    match = re.search(r"big timeline incident #(\d+)", summary)
    if not match:
        raise RuntimeError(f"seed_demo did not report the big incident: {summary}")
    return int(match.group(1)), summary, took


def create_superuser() -> tuple[Any, str]:
    from django.contrib.auth import get_user_model

    password = secrets.token_urlsafe(16)
    user = get_user_model().objects.create_superuser("bench", "", password)
    return user, password


def count_queries(user: Any, paths: dict[str, str], show: bool) -> dict[str, tuple[int, int]]:
    """Render each page in-process with the test Client (same database) and count its SQL
    queries on the second render (the first fills per-process caches)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME=HOST)
    client.force_login(user)
    # No worker runs here, so /healthz answers 503 and django.request logs it as an error.
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    counts: dict[str, tuple[int, int]] = {}
    for name, path in paths.items():
        client.get(path)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(path)
        counts[name] = (len(ctx.captured_queries), len(response.content))
        if show:
            print(f"\n-- {name} {path}: {len(ctx.captured_queries)} queries")
            for query in ctx.captured_queries:
                print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:300]}")
    connection.close()
    return counts


# --- the web server and the measurements ---------------------------------------------


def start_uvicorn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "lotoops.asgi:application",
        "--host", HOST, "--port", str(port),
        "--no-access-log", "--lifespan", "off", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://{HOST}:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{tail(log)}")
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code in (200, 503)
        except requests.ConnectionError:
            return False

    wait_until(up, 30, "uvicorn to answer /healthz")
    return proc


def login(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=10).raise_for_status()
    response = session.post(
        f"{base}/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/",
        },
        headers={"Referer": f"{base}/login/"},
        timeout=30,
    )
    response.raise_for_status()
    if "sessionid" not in session.cookies:
        raise RuntimeError("login failed: no session cookie")
    return session


def timed_get(session: requests.Session, url: str) -> float:
    """Wall time of one GET, body read, in ms."""
    ok = (200, 503) if url.endswith("/healthz") else (200,)  # no worker here: /healthz is 503
    started = time.perf_counter()
    response = session.get(url, timeout=60, allow_redirects=False)
    _ = response.content
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code not in ok:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return elapsed


def measure(
    session: requests.Session, urls: dict[str, str], warmups: int, rounds: int
) -> dict[str, list[float]]:
    """`rounds` rounds of one sequential GET per page, after `warmups` untimed ones each.
    Interleaved so that a burst of load on a shared machine hits every page alike."""
    for url in urls.values():
        for _ in range(warmups):
            timed_get(session, url)
    times: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            times[name].append(timed_get(session, url))
    return times


# --- the embedded run's memory -------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of `pid` and every process below it."""
    tree = _children_map()
    found, todo = [], [(pid, 0)]
    while todo:
        current, parent = todo.pop()
        found.append((current, parent))
        todo.extend((child, current) for child in tree.get(current, []))
    return found


def _status_kb(pid: int, field: str, filename: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{filename}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _label(pid: int, parent: int, runner: int) -> str:
    args = _cmdline(pid).split("\0")
    text = " ".join(args)
    if pid == runner:
        return "runner (lotoops.embedded)"
    if "uvicorn" in text:
        return "web (uvicorn)"
    if " beat" in text:
        return "beat"
    if " worker" in text:
        return "worker pool child" if parent != runner else "worker"
    return Path(args[0]).name if args and args[0] else "?"


def measure_embedded_memory(timeout: float, idle: float) -> list[tuple[int, str, int, int]]:
    """Start the embedded default run in a temp dir, wait until its worker is up, idle,
    then read (pid, role, RSS kB, PSS kB) of the runner and all its descendants."""
    rows: list[tuple[int, str, int, int]] = []

    def read(runner: int) -> None:
        for pid, parent in descendants(runner):
            rss = _status_kb(pid, "VmRSS")
            if rss:
                role = _label(pid, parent, runner)
                rows.append((pid, role, rss, _status_kb(pid, "Pss", "smaps_rollup")))

    with_embedded_run(read, timeout, idle)
    return rows


def with_embedded_run(measure: Callable[[int], None], timeout: float, idle: float) -> None:
    """Start the embedded default run in a temp dir, wait until its worker is up and
    `idle` seconds more, call `measure(runner pid)`, then stop everything it started."""
    var_dir = Path(tempfile.mkdtemp(prefix="lotoops-bench-pages-embedded-"))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update({"PORT": str(port), "HOST": HOST, "LOTOOPS_VAR_DIR": str(var_dir)})
    log = var_dir.parent / f"{var_dir.name}.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lotoops.embedded", "run"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def worker_ok() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded run exited with {proc.returncode}:\n{tail(log)}")
            try:
                body = requests.get(f"http://{HOST}:{port}/healthz", timeout=2).json()
            except (requests.RequestException, ValueError):
                return False
            return body.get("checks", {}).get("worker", {}).get("status") == "ok"

        try:
            wait_until(worker_ok, timeout, "the embedded run's worker to report ok", 0.5)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{tail(log)}") from None
        time.sleep(idle)
        measure(proc.pid)
    finally:
        if proc is not None:
            # The runner stops web, worker and beat itself on SIGINT (each in its own
            # session, so a signal to our group would not reach them anyway).
            started = {pid: _cmdline(pid) for pid, _ in descendants(proc.pid)[1:]}
            stop_process(proc, signal.SIGINT, 30, group=False)
            for pid, cmdline in started.items():  # what it failed to stop, and only that
                if cmdline and _cmdline(pid) == cmdline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(var_dir, ignore_errors=True)
        log.unlink(missing_ok=True)


# --- output --------------------------------------------------------------------------


def print_table(results: list[PageResult]) -> None:
    base = results[0].pct(0.95)
    header = ("page", "p50 ms", "p95 ms", "max ms", "queries", "p95/healthz", "KiB")
    rows = [
        (
            f"{r.name} {r.path}",
            f"{r.pct(0.5):.1f}",
            f"{r.pct(0.95):.1f}",
            f"{max(r.times_ms):.1f}",
            str(r.queries),
            f"{r.pct(0.95) / base:.1f}x",
            f"{r.size / 1024:.0f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    for r in results[1:]:
        within = r.pct(0.95) <= LATENCY_FACTOR * base
        print(f"p95 within {LATENCY_FACTOR}x /healthz: {'yes' if within else 'no'} ({r.name})")


def print_memory(rows: list[tuple[int, str, int, int]]) -> None:
    total = sum(rss for _, _, rss, _ in rows)
    total_pss = sum(pss for _, _, _, pss in rows)
    parts = ", ".join(f"{role} {rss / 1024:.0f}" for _, role, rss, _ in rows)
    print(
        f"embedded run RSS at idle (MB): {parts}; total {total / 1024:.0f} MB "
        f"(PSS {total_pss / 1024:.0f} MB) over {len(rows)} processes; "
        f"goal < {MEMORY_GOAL_MB} MB: {'yes' if total / 1024 < MEMORY_GOAL_MB else 'no'}"
    )


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000, help="events of the big timeline")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--warmups", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        help="postgres://127.0.0.1:5432/lotoops_bench (dropped and recreated); "
        "default: SQLite in a temp dir",
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop PostgreSQL's")
    parser.add_argument("--show-queries", action="store_true", help="print each page's SQL")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.incidents < 1 or args.events < 1 or args.requests < 1 or args.warmups < 0:
        parser.error("--incidents, --events and --requests must be at least 1")
    if args.database_url and (problem := check_postgres_url(args.database_url)):
        parser.error(problem)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lotoops-bench-pages-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    server: subprocess.Popen[bytes] | None = None
    created = False
    try:
        if args.database_url:
            prepare_postgres(database_url)
            created = True
        setup_django(database_url, tmp / "var")
        from django.db import connection

        print(
            f"database: {connection.vendor} ({database_url.split('@')[-1]}); "
            f"{os.cpu_count()} CPUs, load average {_load()}",
            flush=True,
        )
        big_id, summary, seed_time = seed(args.incidents, args.events, args.seed)
        print(f"{summary} [seed_demo wall time {seed_time:.1f} s]", flush=True)
        user, password = create_superuser()
        paths = {
            "healthz": "/healthz",
            "dashboard": "/",
            "incident": f"/incidents/{big_id}/",
        }
        counts = count_queries(user, paths, args.show_queries)

        port = free_port()
        server = start_uvicorn(dict(os.environ), port, tmp / "uvicorn.log")
        base = f"http://{HOST}:{port}"
        session = login(base, user.get_username(), password)
        urls = {name: base + path for name, path in paths.items()}
        times = measure(session, urls, args.warmups, args.requests)
        results = [
            PageResult(name, path, times[name], *counts[name]) for name, path in paths.items()
        ]
        print(
            f"\n{args.requests} sequential requests per page (interleaved rounds) after "
            f"{args.warmups} warm-ups; client wall time (requests.Session, keep-alive); "
            "queries from one in-process render"
        )
        print_table(results)
        print(f"load average after the requests: {_load()}")
        stop_process(server, signal.SIGTERM, 10, group=True)
        server = None
        if not args.skip_memory:
            print(flush=True)
            print_memory(measure_embedded_memory(args.memory_timeout, idle=5.0))
        return 0
    finally:
        if server is not None:
            stop_process(server, signal.SIGTERM, 10, group=True)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if created and not args.keep_database:
            drop_postgres(database_url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
