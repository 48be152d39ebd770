"""Alert ingestion on PostgreSQL, and alert -> incident -> first diagnostic result.

    .venv/bin/python bench/bench_alerts.py [--singles 600] [--groups 20] [--alerts 20]

Starts, on 127.0.0.1: the ASGI app in two uvicorn processes (two replicas of the
documented web command) on a fresh PostgreSQL database, and a real Celery worker
(prefork, 4 processes) on Redis. Then, over HTTP, with Alertmanager's payloads and a
bearer token:

- **single alerts**: `--singles` deliveries of one new alert each, into one group
  whose incident is open (each lands as a new row and a timeline event), sent by 4
  client threads; alerts ingested per second;
- **groups of 100**: `--groups` deliveries of 100 new alerts each; alerts per second;
- **alert -> incident -> first result**: `--alerts` times, a new alert (its own group,
  `service=postgres`) declares a P0 database incident whose automatic diagnostics
  (the database procedure: active queries, locks, slow queries) run against a scratch
  PostgreSQL database, a second apart; from sending the alert to the 200 (the
  incident committed), to the first list of an open dashboard that shows it (its live
  stream, then the list fetched as htmx does), and to the first diagnostic result on
  the incident's page (its live stream, opened once the dashboard shows the incident).

Everything it starts is stopped, and its databases dropped, in `finally` blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
DB, PLATFORM = "lotoops_bench_alerts", "lotoops_bench_alerts_platform"
REDIS = "redis://127.0.0.1:6379/9"
QUEUE = "celery"  # the web processes queue to the default queue of this Redis database


def database(name: str, *, drop: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(predicate, timeout: float = 60.0, every: float = 0.005):  # noqa: ANN001, ANN201
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("benchmark step did not finish")


def alert(name: str, instance: str, service: str = "postgres") -> dict:
    labels = {"alertname": name, "severity": "critical", "service": service, "instance": instance}
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": "2026-11-29T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": uuid.uuid4().hex[:16],
    }


def payload(group: str, alerts: list[dict]) -> str:
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{group}"}}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "lotoops",
            "groupLabels": {"alertname": group},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": alerts,
        }
    )


def send_all(url: str | list[str], token: str, bodies: list[str], threads: int = 4) -> float:
    """Post every body (`threads` at a time, thread n to the n-th of `url`s in turn);
    the wall time in seconds."""
    urls = [url] if isinstance(url, str) else url
    pending = list(bodies)
    lock = threading.Lock()
    failures: list[str] = []

    def client(url: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while True:
            with lock:
                if not pending:
                    return
                body = pending.pop()
            response = session.post(url, data=body, headers=headers, timeout=30)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(urls[n % len(urls)],)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries failed, e.g. {failures[0]}")
    return time.perf_counter() - started


def first_result_on_page(base: str, cookies: dict[str, str], incident_id: int) -> float:
    """When the incident page's live stream (opened now, from its first event) delivers
    the first diagnostic result."""
    with requests.get(
        f"{base}/incidents/{incident_id}/stream/", cookies=cookies, stream=True, timeout=(5, 30)
    ) as stream:
        stream.raise_for_status()
        for line in stream.iter_lines():
            if line.startswith(b"data: ") and b"kind-check_result" in line:
                return time.perf_counter()
    raise RuntimeError(f"incident {incident_id}: no diagnostic result on its page")


class OpenDashboard:
    """A logged-in dashboard page, as the browser keeps it: its live stream open (on the
    other web process than the alerts' deliveries), and on each "changed" the list
    fetched as htmx does. `shows(id)` is when the list first held the incident."""

    def __init__(self, base: str, cookies: dict[str, str]) -> None:
        self.base, self.cookies = base, cookies
        self.lists: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        self.stream = requests.get(
            f"{base}/dashboard/stream/", cookies=cookies, stream=True, timeout=(5, 60)
        )
        self.stream.raise_for_status()
        self.session = requests.Session()
        self.session.cookies.update(cookies)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for line in self.stream.iter_lines():
                if line == b"event: changed":
                    html = self.session.get(
                        f"{self.base}/", headers={"HX-Request": "true"}, timeout=10
                    ).text
                    with self.changed:
                        self.lists.append((time.perf_counter(), html))
                        self.changed.notify_all()
        except (requests.RequestException, AttributeError):  # closed
            pass

    def shows(self, incident_id: int, timeout: float) -> float:
        link = f'href="/incidents/{incident_id}/"'
        deadline = time.perf_counter() + timeout
        with self.changed:
            while True:
                for at, html in self.lists:
                    if link in html:
                        return at
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError(f"incident {incident_id} never reached the dashboard")
                self.changed.wait(left)

    def close(self) -> None:
        self.stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=600)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--alerts", type=int, default=20)
    args = parser.parse_args()

    database(DB)
    database(PLATFORM)
    var_dir = tempfile.mkdtemp(prefix="lotoops-bench-alerts-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{DB}",
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        # The bench's peers listen on loopback, which targets may not point at by default.
        "TARGET_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOTOOPS_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.core.management import call_command

    from alerts import tokens
    from diagnostics.models import CheckRun, Target, WorkerHeartbeat
    from incidents.models import Incident

    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)
    call_command("seed_alerts", verbosity=0)
    Target.objects.create(name="lotolink-db", kind="postgres", url=f"{PG}/{PLATFORM}")
    _, token = tokens.issue("bench")
    # A responder with a dashboard open: its session, made here, valid for the web processes.
    from django.contrib.auth import get_user_model
    from django.test import Client

    viewer = get_user_model().objects.create_superuser("bench-viewer", password="x" * 20)
    browser = Client()
    browser.force_login(viewer)
    cookies = {"sessionid": browser.cookies["sessionid"].value}

    # Two web processes, as two replicas of the documented web command (one uvicorn
    # process each: `--workers N` turns TCP_NODELAY off, ~40 ms per keep-alive answer);
    # the client threads take turns between them, as a Service's connections would.
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    log = Path(var_dir) / "bench.log"
    try:
        with log.open("wb") as out:
            for web_port in ports:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable, "-m", "uvicorn", "lotoops.asgi:application",
                            "--host", "127.0.0.1", "--port", str(web_port),
                            "--no-access-log", "--lifespan", "off", "--log-level", "warning",
                        ],
                        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )  # fmt: skip
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "celery", "-A", "lotoops", "worker",
                        "--loglevel", "WARNING", "--pool", "prefork", "--concurrency", "4",
                        # every queue class (diagnostics/queues.py): paging, checks, long
                        "--queues", ",".join(["celery", "paging", "checks", "long"]),
                        "--without-gossip", "--without-mingle",
                        "--without-heartbeat",
                    ],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        urls = [f"http://127.0.0.1:{p}/hooks/alertmanager/" for p in ports]
        url = urls[0]

        def up() -> bool:
            try:
                for web_port in ports:
                    requests.get(f"http://127.0.0.1:{web_port}/healthz", timeout=5)
                return True
            except requests.RequestException:  # not up yet, or slow on a loaded machine
                return False

        wait(up, timeout=60, every=0.2)
        wait(WorkerHeartbeat.objects.exists, timeout=60, every=0.2)

        # Warm up, and open the incident the single alerts join.
        send_all(url, token, [payload("joined", [alert("Joined", "warm")])], threads=1)
        singles = [payload("joined", [alert("Joined", f"i-{n}")]) for n in range(args.singles)]
        single_s = send_all(urls, token, singles)
        big = [
            payload("big", [alert("Big", f"g{g}-{n}") for n in range(100)])
            for g in range(args.groups)
        ]
        send_all(url, token, [payload("big", [alert("Big", "warm")])], threads=1)
        group_s = send_all(urls, token, big)

        to_incident: list[float] = []
        to_page: list[float] = []
        to_result: list[float] = []
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        dashboard = OpenDashboard(f"http://127.0.0.1:{ports[1]}", cookies)
        try:
            for n in range(args.alerts + 2):
                time.sleep(1.0)  # alerts of separate incidents, a second apart
                body = payload(f"latency-{n}", [alert(f"DbDown{n}", "db-1")])
                sent = time.perf_counter()
                response = session.post(url, data=body, headers=headers, timeout=30)
                answered = time.perf_counter()
                (incident_id,) = response.json()["declared"]
                assert Incident.objects.filter(pk=incident_id).exists()
                shown = dashboard.shows(incident_id, timeout=10)
                # The responder opens the incident: its page's stream, until a result.
                finished = first_result_on_page(
                    f"http://127.0.0.1:{ports[1]}", cookies, incident_id
                )
                runs = CheckRun.objects.filter(incident_id=incident_id, finished_at__isnull=False)
                assert runs.exists()
                if n >= 2:  # warm-up
                    to_incident.append((answered - sent) * 1000)
                    to_page.append((shown - sent) * 1000)
                    to_result.append((finished - sent) * 1000)
        finally:
            dashboard.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        from django.db import connections

        connections.close_all()
        database(DB, drop=True)
        database(PLATFORM, drop=True)

    single_rate = args.singles / single_s
    group_rate = args.groups * 100 / group_s
    print("\nAlertmanager deliveries over HTTP, 2 uvicorn processes, PostgreSQL, 4 client threads")
    print(f"single alerts    {args.singles:>6} deliveries  {single_rate:8.0f} alerts/s")
    print(f"groups of 100    {args.groups:>6} deliveries  {group_rate:8.0f} alerts/s")
    print(f"\nAlert -> incident -> first diagnostic result, {args.alerts} alerts")
    print(f"{'measure':<34}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, values in (
        ("alert -> incident committed", to_incident),
        ("alert -> on an open dashboard", to_page),
        ("alert -> first result on its page", to_result),
    ):
        print(f"{name:<34}{pct(values, 0.5):>10.1f}{pct(values, 0.95):>10.1f}{max(values):>10.1f}")


if __name__ == "__main__":
    main()
