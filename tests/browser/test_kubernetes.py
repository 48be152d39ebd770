"""A responder on a backend outage runs the API procedure's diagnostics from the
browser, sees the OOMKilled pod recommend scaling, confirms a scale to 5 and the
(emulated) cluster's Deployment gets 5 replicas."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from diagnostics.models import CheckRun, RunStatus, Target
from diagnostics.seed import seed_runbooks
from incidents.models import EventKind
from tests import factories
from tests.diagnostics import k8s_server as k8s

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

TOKEN = "k8s-browser-tok-0a1b2c3d4e5f"


@pytest.fixture
def cluster():
    server = k8s.KubeServer(token=TOKEN).start()
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-a", statuses=[k8s.oom_killed_status(4)]))
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-b"))
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-c"))
    server.add(k8s.deployment(replicas=3))
    server.add(
        k8s.replica_set(
            7, "registry.lotolink.com/lotolink-backend:1.8.0", created=k8s.ago(days=1), replicas=3
        )
    )
    server.add(k8s.pod_metrics("lotolink-backend-7d9f8c6b5-a", "300Mi"))
    server.add_logs("lotolink-backend-7d9f8c6b5-a", "backend", ["GET /health 200"])
    yield server
    server.stop()


def test_run_all_finds_oom_killed_and_the_confirmed_scale_lands(
    login, start_worker, cluster, responder, monkeypatch
):
    monkeypatch.setenv(
        "LOTOOPS_TARGET_K8S_TOKEN", TOKEN
    )  # before the worker starts: it inherits it
    seed_runbooks()
    Target.objects.create(
        name="lotolink-k8s",
        kind="kubernetes",
        url=cluster.url,
        secret_env="LOTOOPS_TARGET_K8S_TOKEN",
    )
    responder.user_permissions.add(Permission.objects.get(codename="run_actions"))
    start_worker(concurrency=3)
    # P2: actions on P0/P1 incidents need a second person's approval (tested elsewhere).
    incident = factories.declare(
        actor=responder, severity="P2", category="service_outage", title="API answers 502"
    )

    page = login(responder)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")
    page.click("button.run-all[data-runbook=api]")

    for key in ("api.pods", "api.logs", "api.top", "api.rollout_status"):
        page.wait_for_selector(
            f"#timeline li.kind-check_result:has-text('{key} on lotolink-k8s')", timeout=20000
        )
    pods = page.inner_text("#timeline li.kind-check_result:has-text('api.pods')")
    assert "1 OOMKilled" in pods

    scale = page.locator("#runbook li.step[data-step='api.scale']")
    scale.wait_for()
    assert "recommended" in scale.get_attribute("class")
    assert "oom_killed" in scale.inner_text()
    assert "recommended" not in page.locator(
        "#runbook li.step[data-step='api.rollback']"
    ).get_attribute("class")

    scale.locator("a.review").click()
    page.wait_for_selector("#review-action")
    scale.locator(".action-slot input[name=replicas]").fill("5")
    page.click("#review-action")
    page.wait_for_selector("#confirm-action")
    assert scale.locator(".action-slot .plan").inner_text() == (
        "This will scale deployment lotolink-backend in lotolink from 3 to 5 replicas."
    )
    assert cluster.writes() == []  # reviewing changed nothing
    page.click("#confirm-action")

    page.wait_for_selector(
        "#timeline li.kind-check_result:has-text('api.scale on lotolink-k8s')", timeout=20000
    )
    action = CheckRun.objects.get(step__key="api.scale")
    assert action.status == RunStatus.SUCCEEDED and action.confirmed_by == responder
    assert cluster.get("deployments", "lotolink-backend")["spec"]["replicas"] == 5
    (write,) = cluster.writes()
    assert (write.path, write.body) == (
        "/apis/apps/v1/namespaces/lotolink/deployments/lotolink-backend/scale",
        {"spec": {"replicas": 5}},
    )
    audit = incident.timeline.get(kind=EventKind.ACTION)
    assert audit.actor == responder and "from 3 to 5 replicas" in audit.message
    page.screenshot(path="/tmp/lotoops-k8s-browser.png", full_page=True)


def test_followed_log_lines_appear_live_and_stop_at_their_bound(
    login, start_worker, responder, monkeypatch
):
    """ref.logs_follow streams the lines the pod writes into the page as they come,
    and stops by itself at its line bound: the fourth line never shows."""
    import threading
    import time

    from diagnostics.models import RunbookStep

    server = k8s.KubeServer(token=TOKEN).start()
    try:
        server.add(k8s.pod("lotolink-backend-7d9f8c6b5-a"))
        server.add_logs("lotolink-backend-7d9f8c6b5-a", "backend", ["started"])
        monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", TOKEN)
        seed_runbooks()
        Target.objects.create(
            name="lotolink-k8s",
            kind="kubernetes",
            url=server.url,
            secret_env="LOTOOPS_TARGET_K8S_TOKEN",
        )
        RunbookStep.objects.filter(key="ref.logs_follow").update(
            params={"seconds": 20, "max_lines": 3}
        )
        start_worker(concurrency=1)
        incident = factories.declare(
            actor=responder, severity="P2", category="service_outage", title="Errors in logs"
        )
        page = login(responder)
        page.goto(f"/incidents/{incident.pk}/?procedure=reference")
        page.wait_for_selector("body[data-live=open]")
        step = page.locator("#runbook li.step[data-step='ref.logs_follow']")
        step.locator("button.run").click()
        output = step.locator("pre.run-output")
        output.wait_for(timeout=20000)
        assert "started" in output.inner_text()
        assert CheckRun.objects.get(step__key="ref.logs_follow").status == RunStatus.RUNNING

        def write() -> None:
            for line in ("payment 42 failed", "payment 43 failed", "never shown"):
                time.sleep(1.0)
                server.add_logs("lotolink-backend-7d9f8c6b5-a", "backend", [line])

        writer = threading.Thread(target=write)
        writer.start()
        # The first new line reaches the page while the follow still runs.
        step.locator("pre.run-output:has-text('payment 42 failed')").wait_for(timeout=15000)
        assert CheckRun.objects.get(step__key="ref.logs_follow").status == RunStatus.RUNNING
        page.wait_for_selector(
            "#timeline li.kind-check_result:has-text('ref.logs_follow on lotolink-k8s')",
            timeout=20000,
        )
        writer.join()
        run = CheckRun.objects.get(step__key="ref.logs_follow")
        assert run.status == RunStatus.SUCCEEDED
        assert run.summary.endswith("stopped after 3 lines")
        text = step.locator("pre.run-output").inner_text()
        assert "payment 43 failed" in text and "never shown" not in text
    finally:
        server.stop()
