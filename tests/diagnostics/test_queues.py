"""Queues by class (diagnostics/queues.py): a page to the on-call engineer never
waits behind diagnostics, and long actions never hold the check workers."""

from __future__ import annotations

import time

import pytest
import redis

from diagnostics import queues, services
from diagnostics.models import CheckRun, RunStatus, Target
from incidents.models import Notification
from tests import factories
from tests.conftest import TEST_QUEUE, redis_url
from tests.diagnostics.conftest import step
from tests.incidents.fake_servers import HttpRecorder, start_http


def test_paging_tasks_go_to_the_paging_queue_and_checks_by_their_length(settings):
    settings.CELERY_TASK_DEFAULT_QUEUE = "celery"
    for task in (
        "incidents.paging.tasks.page_incident",
        "incidents.paging.tasks.deliver_notification",
        "incidents.paging.tasks.escalate_due",
        "incidents.postincident.tasks.send_checklist_reminders",
    ):
        assert queues.route(task, (), {}, {}) == {"queue": "paging"}
    assert queues.route("diagnostics.tasks.heartbeat", (), {}, {}) is None  # default queue
    assert queues.for_check("postgres.locks", 30) == "checks"
    assert queues.for_check("postgres.snapshot", 600) == "long"
    assert queues.for_check("kubernetes.export_logs", 60) == "long"
    assert queues.for_check("test.echo", 300) == "long"
    settings.CELERY_TASK_DEFAULT_QUEUE = "lotoops-test-x"
    assert queues.name("paging") == "lotoops-test-x.paging"
    assert queues.all_queues("celery") == ["celery", "paging", "checks", "long"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_a_page_is_delivered_while_the_checks_queue_holds_500_slow_runs(
    start_worker, responder, testbook, api_target
):
    recorder = HttpRecorder()
    server, url = start_http(recorder)
    try:
        diag = step("diag")
        diag.params = {"lines": 1, "delay": 2.0}  # every run takes two seconds
        diag.save()
        broker = redis.Redis.from_url(redis_url(), socket_timeout=5)
        checks = queues.name(queues.CHECKS, TEST_QUEUE)
        broker.delete(checks)  # what earlier tests of this session left behind
        busy = factories.declare(actor=responder, category="database", title="Slow everything")
        # 500 distinct runs (one per target): the same request again would get its
        # queued run back (a double click queues one run).
        targets = Target.objects.bulk_create(
            Target(name=f"lotolink-api-{n}", kind="http", url="http://127.0.0.1:1/health")
            for n in range(500)
        )
        for target in targets:
            services.request_check(busy, diag, actor=responder, target=target)
        assert broker.llen(checks) == 500
        start_worker(concurrency=1, include="tests.diagnostics.engine_probes", queues=["checks"])
        start_worker(
            concurrency=1,
            queues=["paging"],
            env={"NOTIFY_WEBHOOK_URL": f"{url}/hook", "NOTIFY_WEBHOOK_SECRET": "s3cret-hook"},
        )
        declared = time.monotonic()
        paged = factories.declare(actor=responder, category="payment", title="Payments down")

        def delivered() -> bool:
            return any(r["json"].get("incident") == paged.pk for r in recorder.requests)

        while not delivered() and time.monotonic() - declared < 30:
            time.sleep(0.05)
        took = time.monotonic() - declared
        assert delivered(), "the page never left"
        assert took < 10, f"the page waited {took:.1f} s"
        rows = Notification.objects.filter(incident=paged, channel="webhook", status="sent")
        deadline = time.monotonic() + 10  # the worker records "sent" just after the POST
        while not rows.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows.exists()
        # The diagnostics are still there, behind: the page did not wait for them.
        done = CheckRun.objects.filter(incident=busy, status=RunStatus.SUCCEEDED).count()
        assert done < 20
        assert broker.llen(checks) > 450
    finally:
        server.shutdown()
