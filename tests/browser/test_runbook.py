"""A responder runs a database incident's diagnostics from the browser, sees the
results land live, and runs the action they recommend after confirming it."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from django.contrib.auth.models import Permission

from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.seed import seed_runbooks
from incidents.models import EventKind
from tests import factories

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

PLATFORM_DB = "lotoops_browser_platform"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def platform_db():
    """A scratch database standing in for Lotolink's, with one query stuck in pg_sleep."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [PLATFORM_DB]
        ).fetchone():
            conn.execute(f'CREATE DATABASE "{PLATFORM_DB}"')
    marker = f"stuck-{uuid.uuid4().hex[:6]}"
    outcome: dict[str, str] = {}

    def stuck_query() -> None:
        try:
            with psycopg.connect(
                f"postgres://postgres@127.0.0.1:5432/{PLATFORM_DB}", application_name=marker
            ) as conn:
                conn.execute("SELECT pg_sleep(120)")
                outcome["end"] = "finished"
        except psycopg.Error as exc:
            outcome["end"] = type(exc).__name__

    thread = threading.Thread(target=stuck_query, daemon=True)
    thread.start()
    time.sleep(1.5)  # long enough to pass the lowered threshold
    yield {
        "url": f"postgres://postgres@127.0.0.1:5432/{PLATFORM_DB}",
        "marker": marker,
        "outcome": outcome,
        "thread": thread,
    }
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [marker],
        )
    thread.join(timeout=10)


def test_run_all_diagnostics_then_the_recommended_action(
    login, start_worker, platform_db, responder
):
    seed_runbooks()
    RunbookStep.objects.filter(key="db.slow_queries").update(params={"min_seconds": 1})
    Target.objects.create(name="lotolink-db", kind="postgres", url=platform_db["url"])
    responder.user_permissions.add(Permission.objects.get(codename="run_actions"))
    start_worker(concurrency=3)
    incident = factories.declare(  # P2: no second person's approval needed
        actor=responder, category="database", title="Checkout queries hang", severity="P2"
    )

    page = login(responder)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")  # the live stream is open
    page.evaluate("() => { window.__notReloaded = true; }")
    page.click("button.run-all[data-runbook=database]")

    # Each diagnostic's result lands on the timeline, live.
    for key in ("db.active_queries", "db.locks", "db.slow_queries"):
        page.wait_for_selector(
            f"#timeline li.kind-check_result:has-text('{key} on lotolink-db')", timeout=15000
        )
    assert page.evaluate("() => window.__notReloaded") is True
    assert "db.disk (No Kubernetes target is configured" in page.inner_text("#timeline")
    slow = page.inner_text("#timeline li.kind-check_result:has-text('db.slow_queries')")
    assert "long-running" in slow or "running longer" in slow or "1 " in slow

    # What db.slow_queries found lights up the action the runbook recommends.
    terminate = page.locator("#runbook li.step[data-step='db.terminate_query']")
    terminate.wait_for()
    assert "recommended" in terminate.get_attribute("class")
    assert "long_running_queries" in terminate.inner_text()
    assert "recommended" not in page.locator(
        "#runbook li.step[data-step='db.vacuum']"
    ).get_attribute("class")

    # Running it asks for a confirmation that says exactly what will happen.
    run = CheckRun.objects.get(step__key="db.slow_queries")
    stuck_pid = next(
        q["pid"]
        for q in run.evidence["long_running_queries"]["queries"]
        if "pg_sleep" in q["query"]
    )
    terminate.locator("a.review").click()
    page.wait_for_selector("#review-action")
    terminate.locator(".action-slot select[name=pid]").select_option(value=str(stuck_pid))
    page.click("#review-action")
    page.wait_for_selector("#confirm-action")
    plan = terminate.locator(".action-slot .plan").inner_text()
    assert str(stuck_pid) in plan
    assert not CheckRun.objects.filter(step__key="db.terminate_query").exists()  # nothing yet
    page.click("#confirm-action")

    page.wait_for_selector("#timeline li.kind-action", timeout=5000)
    page.wait_for_selector(
        "#timeline li.kind-check_result:has-text('db.terminate_query')", timeout=15000
    )
    action = CheckRun.objects.get(step__key="db.terminate_query")
    assert action.status == RunStatus.SUCCEEDED and action.confirmed_by == responder
    assert action.params["pid"] == stuck_pid and str(stuck_pid) in action.plan
    platform_db["thread"].join(timeout=10)
    assert platform_db["outcome"]["end"] != "finished"  # the stuck query was really terminated
    audit = incident.timeline.get(kind=EventKind.ACTION)
    assert audit.actor == responder and str(stuck_pid) in audit.message
    page.screenshot(path="/tmp/lotoops-runbook-browser.png", full_page=True)
