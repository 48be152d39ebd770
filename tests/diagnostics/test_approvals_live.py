"""Issue 20, hole 3, against live servers: two uvicorn web processes and two Celery
workers on the test database and Redis, driven over HTTP as browsers would (session
cookie, CSRF, htmx headers).

The hole: the requester alone lowered a P1 incident to P2, reviewed and confirmed an
action ("Confirmed and queued", nobody approved it), and raised it back to P1. Now
the incident's severity history counts (it was P1: approval needed whatever it is
now), the requester cannot approve their own request, two approvers at once on two
web processes queue it once, and a worker runs exactly the approved plan. A severity
raised while confirmations are posted on both web processes is decided under the
incident's lock: no action is queued without approval after the raise."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from django.contrib.auth.models import Group, Permission

from diagnostics.models import ActionApproval, ApprovalStatus, CheckRun, RunStatus
from incidents.models import EventKind, Severity
from tests import factories
from tests.conftest import TEST_QUEUE, redis_url
from tests.incidents.live_helpers import session_cookie, web_process

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

PLAN = "restart 7 workers on lotolink-api"
APP = "tests.diagnostics.web_with_test_probes:application"


def person(username: str, *perms: str):
    user = factories.UserFactory(username=username)
    user.groups.add(Group.objects.get(name="Responders"))
    for perm in perms:
        app, _, codename = perm.partition(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return user


class Browser:
    """One person's browser on one web process, on one incident's page."""

    def __init__(self, base: str, user, incident) -> None:
        self.incident = incident
        self.http = httpx.Client(base_url=base, cookies=session_cookie(user), timeout=30)
        assert self.http.get(f"/incidents/{incident.pk}/").status_code == 200
        self.csrf = self.http.cookies["csrftoken"]

    def post(self, tail: str, data: dict, *, htmx: bool = True) -> httpx.Response:
        headers = {"X-CSRFToken": self.csrf} | ({"HX-Request": "true"} if htmx else {})
        return self.http.post(f"/incidents/{self.incident.pk}/{tail}", data=data, headers=headers)

    def severity(self, key: str) -> None:
        pk = Severity.objects.get(key=key).pk
        answer = self.post("severity/", {"severity": pk, "reason": f"now {key}"}, htmx=False)
        assert answer.status_code == 302, answer.text

    def review(self, target) -> str:
        answer = self.post("steps/test.act/action/", {"stage": "review", "target": target.pk})
        assert answer.status_code == 200, answer.text
        return re.search(r'name="token" value="([^"]+)"', answer.text).group(1)

    def confirm(self, token: str) -> httpx.Response:
        return self.post("steps/test.act/action/", {"stage": "confirm", "token": token})

    def approve(self, approval: ActionApproval) -> httpx.Response:
        return self.post(f"approvals/{approval.pk}/approve/", {})


@pytest.fixture
def webs(runbook, testbook, api_target):
    """Two web processes (the target's token variable is in their environment)."""
    env = {"CELERY_BROKER_URL": redis_url(), "CELERY_DEFAULT_QUEUE": TEST_QUEUE}
    # A shared machine under load can take a while to import Django twice.
    with (
        web_process(app=APP, start_timeout=90, **env) as one,
        web_process(app=APP, start_timeout=90, **env) as two,
    ):
        yield one, two


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_lowering_the_severity_for_a_moment_still_waits_for_a_second_person(
    webs, start_worker, api_target
):
    for _ in range(2):
        start_worker(concurrency=1, include="tests.diagnostics.engine_probes")
    ana = person("ana", "incidents.run_actions", "diagnostics.approve_actions")
    ida = person("ida", "diagnostics.approve_actions")
    olga = person("olga", "diagnostics.approve_actions")
    p1 = factories.declare(actor=ana, category="database", severity="P1", title="Checkout slow")
    one, two = webs
    ana_one, ana_two = Browser(one, ana, p1), Browser(two, ana, p1)

    ana_one.severity("P2")
    asked = ana_two.confirm(ana_two.review(api_target))
    ana_one.severity("P1")
    assert asked.status_code == 200, asked.text
    assert "awaits another person" in asked.text and "Confirmed and queued" not in asked.text
    approval = ActionApproval.objects.get()
    assert (approval.plan, approval.status, approval.requested_by) == (
        PLAN,
        ApprovalStatus.PENDING,
        ana,
    )
    assert not CheckRun.objects.exists()

    own = ana_one.approve(approval)  # ana holds the approve permission: still not her own
    assert own.status_code == 422
    assert "You asked for this action: another person must approve it." in own.text

    approvers = [Browser(one, ida, p1), Browser(two, olga, p1)]
    start = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def press(name: str, browser: Browser) -> None:
        start.wait(timeout=10)
        answers[name] = browser.approve(approval)

    threads = [
        threading.Thread(target=press, args=(name, browser))
        for name, browser in zip(("ida", "olga"), approvers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(a.status_code for a in answers.values()) == [200, 422], answers
    run = CheckRun.objects.get()
    winner = next(name for name, a in answers.items() if a.status_code == 200)
    loser = next(a for a in answers.values() if a.status_code == 422)
    assert f"was already approved by {winner}" in loser.text

    wait_for(lambda: CheckRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 60, "the run")
    run.refresh_from_db()
    assert (run.plan, run.params, run.requested_by, run.confirmed_by.username) == (
        PLAN,
        approval.params,
        ana,
        winner,
    )
    assert run.summary == "restarted 7 workers"
    assert CheckRun.objects.count() == 1


def test_a_severity_raised_while_confirming_on_two_web_processes_is_never_skipped(webs, api_target):
    ana = person("ana", "incidents.run_actions")
    ben = person("ben")
    p2 = factories.declare(actor=ana, category="database", severity="P2", title="Slow reports")
    one, two = webs
    browsers = [Browser(one, ana, p2), Browser(two, ana, p2)]
    tokens = [browsers[n % 2].review(api_target) for n in range(6)]
    raiser = Browser(one, ben, p2)
    start_at = time.time() + 1.5
    answers: list[httpx.Response] = []

    def confirm(n: int) -> None:
        time.sleep(max(0.0, start_at + 0.02 * n - time.time()))
        answers.append(browsers[n % 2].confirm(tokens[n]))

    def raise_it() -> None:
        time.sleep(max(0.0, start_at + 0.05 - time.time()))
        raiser.severity("P1")

    threads = [threading.Thread(target=confirm, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=raise_it))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]

    raised = p2.timeline.get(kind=EventKind.SEVERITY).seq
    queued = p2.timeline.filter(kind=EventKind.ACTION, message__contains=" confirmed ")
    asked = p2.timeline.filter(kind=EventKind.ACTION, message__contains="asked for approval")
    # Queued without approval only before the raise; every confirmation after it asked.
    assert all(event.seq < raised for event in queued), (raised, list(queued.values("seq")))
    assert all(event.seq > raised for event in asked), (raised, list(asked.values("seq")))
    assert queued.count() + asked.count() == 6
    assert CheckRun.objects.count() == queued.count()
    assert ActionApproval.objects.count() == asked.count()
