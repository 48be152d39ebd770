"""PostgreSQL restarted or down, against a server of the test's own (tests/own_servers.py):
the real ASGI app under uvicorn and a real Celery worker, both on it. After a restart,
pages, /healthz and the worker recover with no failed request (the pool checks each
connection as it hands it out, settings.py); while it restarts or is down, a page is a
clear 503, never a 500 or a traceback (lotoops/errors.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.own_servers import OwnPostgres, free_port, own_postgres

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "restart-test-password-9"

pytestmark = pytest.mark.timeout(240)


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


SETUP = """
from django.contrib.auth import get_user_model
from diagnostics.models import Target
from incidents.models import Severity
from incidents.services import declare_incident
admin = get_user_model().objects.create_superuser("admin", "admin@example.com", {password!r})
Target.objects.create(name="lotolink-api", kind="http", url={url!r})
incident = declare_incident(title="Database restarted", category="database",
    severity=Severity.objects.get(key="P2"), actor=admin)
print("INCIDENT", incident.pk)
"""

RUN_CHECK = """
from django.contrib.auth import get_user_model
from diagnostics import services
from diagnostics.models import RunbookStep
from incidents.models import Incident
admin = get_user_model().objects.get(username="admin")
run, = services.request_check(Incident.objects.get(pk={incident}),
    RunbookStep.objects.get(key="init.health"), actor=admin)
print("RUN", run.pk)
"""


class Site:
    def __init__(self, server: OwnPostgres, env: dict[str, str], url: str, incident: int) -> None:
        self.server, self.env, self.url, self.incident = server, env, url, incident
        self.client = httpx.Client(base_url=url, timeout=15)

    def login(self) -> None:
        self.client.get("/login/")
        response = self.client.post(
            "/login/",
            data={
                "username": "admin",
                "password": PASSWORD,
                "csrfmiddlewaretoken": self.client.cookies["csrftoken"],
            },
        )
        assert response.status_code == 302, response.text[:500]

    def pages(self) -> list[str]:
        return ["/", f"/incidents/{self.incident}/", "/healthz"]

    def run_check(self) -> int:
        output = manage(self.env, "shell", "-c", RUN_CHECK.format(incident=self.incident))
        return int(re.search(r"RUN (\d+)", output).group(1))

    def run_status(self, run: int) -> str:
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT status FROM diagnostics_checkrun WHERE id = %s", [run]
            ).fetchone()
        return row[0]

    def run_attempts(self, run: int) -> int:
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT attempts FROM diagnostics_checkrun WHERE id = %s", [run]
            ).fetchone()
        return row[0]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    var_dir = tempfile.mkdtemp(prefix="lotoops-restart-")
    for folder in ("queue", "control"):  # the embedded broker's (the run command makes them)
        (Path(var_dir) / "broker" / folder).mkdir(parents=True)
    with own_postgres() as server:
        env = {
            **os.environ,
            "DATABASE_URL": server.create_database("lotoops"),
            "REDIS_URL": "",
            "CELERY_BROKER_URL": "",
            "LOTOOPS_VAR_DIR": var_dir,
            "DJANGO_SETTINGS_MODULE": "lotoops.settings",
            "PYTHONUNBUFFERED": "1",
            "CELERY_DEFAULT_QUEUE": "celery",
        }
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "seed_runbook", "-v0")
        out = manage(
            env,
            "shell",
            "-c",
            SETUP.format(password=PASSWORD, url=f"http://127.0.0.1:{endpoint.server_port}/health"),
        )
        incident = int(re.search(r"INCIDENT (\d+)", out).group(1))
        port = free_port()
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
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "lotoops",
                "worker",
                "--loglevel=WARNING",
                "--pool=prefork",
                "--concurrency=2",
                "--queues=celery,paging,checks,long",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(url), 30, "the web process starts")
            site = Site(server, env, url, incident)
            site.login()
            yield site
        finally:
            for process in (web, worker):
                os.killpg(process.pid, signal.SIGTERM)
            for process in (web, worker):
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            endpoint.shutdown()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def assert_no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and "Server Error" not in response.text


def test_pages_and_the_worker_recover_from_a_restart_without_a_failed_request(site):
    run = site.run_check()
    wait_for(lambda: site.run_status(run) == "succeeded", 30, "a check run before the restart")
    for _ in range(3):  # every pooled connection of the web process is in use once
        for page in site.pages():
            assert site.client.get(page).status_code == 200, page

    site.server.restart()  # every connection the web process and the worker hold dies

    # The first request after the restart is served: the pool found its connections
    # dead and made new ones, hidden from the user.
    for _ in range(3):
        for page in site.pages():
            response = site.client.get(page)
            assert response.status_code == 200, (page, response.text[:300])
    run = site.run_check()
    wait_for(lambda: site.run_status(run) == "succeeded", 30, "the worker recovers")
    # At its first attempt: the worker's pool process kept its pool between tasks, and
    # the pool replaced the dead connection when the task took one.
    assert site.run_attempts(run) == 1


def test_during_a_restart_and_an_outage_pages_answer_503_never_500(site):
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=site.url, cookies=site.client.cookies, timeout=15) as client:
            while not stop.is_set():
                response = client.get("/")
                statuses.append(response.status_code)
                if response.status_code != 200:
                    assert_no_traceback(response)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.5)
        site.server.restart()
        time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert statuses and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses[-1] == 200

    site.server.stop()
    try:
        for page in ["/", f"/incidents/{site.incident}/"]:
            response = site.client.get(page)
            assert response.status_code == 503, (page, response.status_code)
            assert "The database is unavailable" in response.text
            assert response.headers["Retry-After"] == "5"
            assert_no_traceback(response)
        health = site.client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert site.client.get("/readyz").status_code == 503
    finally:
        site.server.start()
    for page in site.pages():
        assert site.client.get(page).status_code == 200, page
    run = site.run_check()
    wait_for(lambda: site.run_status(run) == "succeeded", 30, "the worker after the outage")
