"""Many open dashboards during an alert storm: do the incident pages stay fast?

    .venv/bin/python bench/bench_dashboards.py [--dashboards 150] [--seconds 20] [--every 0.5]

One web process (the documented web command: one uvicorn process) on a fresh
PostgreSQL database, with Redis. `--dashboards` logged-in dashboards are open, each
as the browser keeps it: its live stream, and on each "changed" its list fetched as
htmx fetches it. Then a storm: an incident declared every `--every` s for `--seconds`
s (written by this process, as other web processes or the alert receiver would).
Meanwhile one responder loads an incident page again and again. Printed: the incident
page's latency (p50/p95/max), its statuses, the dashboards' list fetches per second,
and how long a new incident took to reach the dashboards (first and last of them).
Run twice: with the default DASHBOARD_LIVE_FETCHES (10 list fetches a second for all
the dashboards of the process) and with a budget so large that every dashboard
fetches up to twice a second (what a fixed half-second per page would do).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_alerts import PG, OpenDashboard, database, free_port, pct, wait  # noqa: E402

DB = "lotoops_bench_dashboards"
REDIS = "redis://127.0.0.1:6379/10"


# One for every run: the secret key made there signs the sessions of all of them.
VAR_DIR = tempfile.mkdtemp(prefix="lotoops-bench-dashboards-")


def run_once(budget: float, args: argparse.Namespace) -> dict[str, object]:
    database(DB)
    var_dir = VAR_DIR
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{DB}",
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        "LOTOOPS_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
        "DASHBOARD_LIVE_FETCHES": str(budget),
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client

    from incidents.models import Incident, Severity
    from incidents.services import declare_incident

    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", password="x" * 20)
    browser = Client()
    browser.force_login(user)
    cookies = {"sessionid": browser.cookies["sessionid"].value}
    p2 = Severity.objects.get(key="P2")
    watched = declare_incident(title="Being worked", category="payment", severity=p2, actor=user)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "lotoops.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--lifespan", "off", "--log-level", "warning",
        ],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    dashboards: list[OpenDashboard] = []
    try:
        wait(lambda: _up(base), timeout=60, every=0.2)
        dashboards = [OpenDashboard(base, cookies) for _ in range(args.dashboards)]
        time.sleep(2)

        page = requests.Session()
        page.cookies.update(cookies)
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        storm_over = threading.Event()

        def responder() -> None:
            while not storm_over.is_set():
                started = time.perf_counter()
                response = page.get(f"{base}/incidents/{watched.pk}/", timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        reader = threading.Thread(target=responder)
        reader.start()
        declared: dict[int, float] = {}
        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < args.seconds:
            incident = declare_incident(
                title=f"Storm {n}", category="banca", severity=p2, actor=user
            )
            declared[incident.pk] = time.perf_counter()
            n += 1
            time.sleep(max(0.0, started + n * args.every - time.perf_counter()))
        storm_s = time.perf_counter() - started
        time.sleep(3)  # the last changes reach the dashboards
        storm_over.set()
        reader.join()
        fetched = [at for d in dashboards for at, _ in list(d.lists)]
        in_storm = [t for t in fetched if started <= t <= started + storm_s]
        first, last = [], []
        for pk, at in declared.items():
            link = f'href="/incidents/{pk}/"'
            shown = [
                next((when for when, html in list(d.lists) if link in html), None)
                for d in dashboards
            ]
            delays = [(when - at) * 1000 for when in shown if when is not None]
            if delays:
                first.append(min(delays))
                last.append(max(delays))
        return {
            "latencies": latencies,
            "statuses": statuses,
            "fetch_rate": len(in_storm) / storm_s,
            "first": first,
            "last": last,
            "declared": len(declared),
            "incidents": Incident.objects.count(),
        }
    finally:
        for dashboard in dashboards:
            dashboard.close()
        web.terminate()
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            web.kill()
        connections.close_all()
        database(DB, drop=True)


def _up(base: str) -> bool:
    try:
        requests.get(f"{base}/healthz", timeout=5)
        return True
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dashboards", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--budgets", default="10,100000")
    args = parser.parse_args()
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        result = run_once(budget, args)
        rows.append((budget, result))
        print(f"  budget {budget:g}: done", flush=True)
    print(
        f"\n{args.dashboards} dashboards open on one web process; an incident declared every "
        f"{args.every:g} s for {args.seconds:g} s; one responder reloading an incident page"
    )
    head = f"{'list fetches/s budget':<24}{'fetches/s':>10}{'page p50':>10}{'page p95':>10}"
    print(f"{head}{'page max':>10}{'first ms':>10}{'last p95':>10}  statuses")
    for budget, r in rows:
        lat, first, last = r["latencies"], r["first"] or [0.0], r["last"] or [0.0]
        line = f"{budget:<24g}{r['fetch_rate']:>10.1f}{pct(lat, 0.5):>10.0f}{pct(lat, 0.95):>10.0f}"
        print(
            f"{line}{max(lat):>10.0f}{pct(first, 0.5):>10.0f}{pct(last, 0.95):>10.0f}"
            f"  {r['statuses']}"
        )
    print("page: the incident page's latency (ms) during the storm; first / last: from a")
    print("declaration to the first dashboard showing it (p50) and to the last one (p95)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
