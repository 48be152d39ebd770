"""Behind PgBouncer in transaction mode (DATABASE_PGBOUNCER=true, settings.py): a
PgBouncer of the test's own in front of the test database, the real ASGI app under
uvicorn and a real Celery worker both through it. Pages, a note (a transaction with
row locks) and check runs all work, and nothing relies on a session: the connections
PgBouncer gives the app rotate between transactions."""

from __future__ import annotations

import re
import time

import httpx
import psycopg
import pytest
from django.db import connection

from diagnostics import services
from diagnostics.models import CheckRun, RunStatus
from incidents.models import EventKind
from tests import factories
from tests.diagnostics import worker as worker_helpers
from tests.diagnostics.conftest import step
from tests.incidents.live_helpers import session_cookie, web_process
from tests.own_servers import own_pgbouncer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]


@pytest.fixture
def bouncer_url(transactional_db):
    direct = worker_helpers.test_database_url()
    host, port = re.search(r"@([^:/]+):(\d+)/", direct).groups()
    with own_pgbouncer(host, int(port), pool_size=4) as listen:
        yield re.sub(r"@[^/]+/", f"@127.0.0.1:{listen}/", direct)
    connection.close()


def test_pages_writes_and_check_runs_work_through_pgbouncer_in_transaction_mode(
    bouncer_url, start_worker, responder, testbook, api_target
):
    env = {"DATABASE_URL": bouncer_url, "DATABASE_PGBOUNCER": "true"}
    incident = factories.declare(actor=responder, category="database", title="Through PgBouncer")
    worker = start_worker(concurrency=2, include="tests.diagnostics.engine_probes", env=env)
    cookies = session_cookie(responder)
    with (
        web_process(**env) as url,
        httpx.Client(base_url=url, cookies=cookies, timeout=15) as client,
    ):
        for _ in range(5):  # more requests than PgBouncer has server connections
            for page in ("/", f"/incidents/{incident.pk}/", "/healthz", "/readyz"):
                response = client.get(page)
                assert response.status_code == 200, (page, response.text[:300])
        client.get(f"/incidents/{incident.pk}/")  # sets the CSRF cookie
        csrf = client.cookies["csrftoken"]
        note = client.post(
            f"/incidents/{incident.pk}/notes/",
            data={"text": "Written through PgBouncer", "csrfmiddlewaretoken": csrf},
        )
        assert note.status_code in (200, 302), note.text[:300]
    assert incident.timeline.filter(kind=EventKind.NOTE, message__contains="PgBouncer").exists()

    others = [factories.declare(actor=responder, category="database") for _ in range(5)]
    runs = [
        run
        for each in [incident, *others]
        for run in services.request_check(each, step("diag"), actor=responder)
    ]
    deadline = time.monotonic() + 30
    while CheckRun.objects.filter(pk__in=[r.pk for r in runs], finished_at__isnull=True).exists():
        assert time.monotonic() < deadline, "check runs through PgBouncer did not finish"
        time.sleep(0.2)
    for run in CheckRun.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.status == RunStatus.SUCCEEDED and run.output == "line 0\nline 1\nline 2\n"
    assert worker.process.poll() is None

    # The app's connections went through PgBouncer: it served them from its own pool.
    admin_port = re.search(r":(\d+)/", bouncer_url).group(1)
    with psycopg.connect(
        f"postgres://postgres@127.0.0.1:{admin_port}/pgbouncer", autocommit=True
    ) as admin:
        pools = admin.execute("SHOW POOLS").fetchall()
    assert connection.settings_dict["NAME"] in [row[0] for row in pools]
