"""Screenshots of the dashboard and an incident page at a laptop's and a phone's size.

    .venv/bin/python docs/screenshots/take.py --suffix after [--out docs/screenshots]

Builds a throwaway site (SQLite and the file broker in a temp dir, like the embedded
default): seeds the runbook, declares a few incidents, works one of them (acknowledged,
notes, a status update, checklist ticks) and runs three of its database checks in
process (Celery eager) against this machine's PostgreSQL while a query sleeps there, so
the page shows real results, evidence and a recommended action. Then it serves the site
with uvicorn and photographs it with Debian's chromium (Playwright):
{dashboard,incident}-{laptop,phone}-SUFFIX.png (1440x900 and 390x844, full page).
Everything it starts is stopped and the temp dir removed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
VIEWPORTS = {"laptop": (1440, 900), "phone": (390, 844)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(var_dir: Path) -> None:
    os.environ.update(
        {
            "LOTOOPS_VAR_DIR": str(var_dir),
            "DJANGO_SETTINGS_MODULE": "lotoops.settings",
            "DEBUG": "false",
            "CELERY_TASK_ALWAYS_EAGER": "true",
        }
    )
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    for key in ("data_folder_in", "control_folder"):
        if folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key):
            Path(str(folder)).mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("seed_runbook", stdout=StringIO())


def sleeping_query(seconds: int) -> threading.Thread:
    """A query that runs long on this machine's PostgreSQL (what db.slow_queries finds)."""
    import psycopg

    def run() -> None:
        try:
            with psycopg.connect(PG_URL, application_name="screenshot-stuck") as conn:
                conn.execute("SELECT pg_sleep(%s)", [seconds])
        except psycopg.Error:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def make_data(password: str) -> int:
    from django.contrib.auth import get_user_model

    from diagnostics import services as engine
    from diagnostics.models import RunbookStep, Target
    from incidents import services
    from incidents.models import Incident, Severity

    user = get_user_model().objects.create_superuser("ana", "ana@example.com", password)

    def declare(title: str, sev: str, category: str, **kw: object) -> Incident:
        return services.declare_incident(
            title=title, category=category, severity=Severity.objects.get(key=sev),
            actor=user, **kw,
        )  # fmt: skip

    declare("Banca Central health check failing", "P2", "banca", impacted_services=["banca"])
    declare("Stripe webhooks answer 500", "P1", "payment", affected_users=340)
    declare("Slow draws page for some users", "P3", "service_outage")
    incident = declare(
        "Checkout queries hang on the main database", "P1", "database",
        summary="Checkout times out for most users since 02:40.",
        impacted_services=["lotolink-backend", "postgres"], affected_users=1200,
    )  # fmt: skip
    services.acknowledge_incident(incident, actor=user)
    services.add_note(incident, "p95 of /checkout at 28 s; the DB CPU is flat.", actor=user)
    for item in incident.checklist.order_by("pk")[:3]:
        services.set_checklist_item(item, done=True, actor=user)
    services.post_status_update(
        incident, "Checkout is slow for most users; we are looking at the database.", actor=user
    )
    Target.objects.create(name="lotolink-db", kind="postgres", url=PG_URL)
    RunbookStep.objects.filter(key="db.slow_queries").update(params={"min_seconds": 1})
    thread = sleeping_query(30)
    time.sleep(2)
    for key in ("db.active_queries", "db.locks", "db.slow_queries"):
        engine.request_check(incident, RunbookStep.objects.get(key=key), actor=user)
    note = "One query has been running for minutes: terminating it."
    services.add_note(incident, note, actor=user)
    del thread  # it ends on its own
    return incident.pk


def serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["CELERY_TASK_ALWAYS_EAGER"] = "false"
    command = [
        sys.executable, "-m", "uvicorn", "lotoops.asgi:application", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--lifespan", "off", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)  # noqa: S603
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"uvicorn did not start: {log.read_text()[-2000:]}")


def shoot(base: str, password: str, incident: int, out: Path, suffix: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    made = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--headless", "--no-sandbox"]
        )
        for name, (width, height) in VIEWPORTS.items():
            context = browser.new_context(
                base_url=base, viewport={"width": width, "height": height}
            )
            page = context.new_page()
            page.goto("/login/")
            page.fill("#id_username", "ana")
            page.fill("#id_password", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            for what, path in (("dashboard", "/"), ("incident", f"/incidents/{incident}/")):
                page.goto(path)
                page.wait_for_load_state("networkidle")
                time.sleep(0.5)
                file = out / f"{what}-{name}-{suffix}.png"
                page.screenshot(path=str(file), full_page=True)
                made.append(file)
            context.close()
        browser.close()
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suffix", default="after")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lotoops-shots-"))
    proc = None
    try:
        setup(tmp / "var")
        password = secrets.token_urlsafe(16)
        incident = make_data(password)
        from django.db import connection

        connection.close()
        port = free_port()
        proc = serve(port, tmp / "uvicorn.log")
        base = f"http://127.0.0.1:{port}"
        for file in shoot(base, password, incident, args.out, args.suffix):
            print(file)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
