"""Findings carry the run (and time) that found them and are superseded when a later
run of the same check (same incident, step and target) no longer finds them; the
recommendation and the action's choices go with them. A run that could not look
(an error) supersedes nothing; another target's clean run neither."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, Target
from diagnostics.tasks import run_check
from diagnostics.views import runbook_context
from tests import factories
from tests.diagnostics.conftest import step

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(responder, testbook, api_target):
    return factories.declare(actor=responder, category="database", title="Slow", severity="P2")


def check(incident, actor, target=None, **params) -> CheckRun:
    """test.diag with these params, a few seconds after any earlier request."""
    CheckRun.objects.update(queued_at=F("queued_at") - timedelta(seconds=3))
    RunbookStep.objects.filter(key="test.diag").update(params=params)
    (run,) = services.request_check(incident, step("diag"), actor=actor, target=target)
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    return run


def recommended(rf, incident, user) -> dict[str, list[str]]:
    request = rf.get("/")
    request.user = user
    context = runbook_context(request, incident)
    return {
        item["step"].key: item["because"]
        for book in context["runbooks"]
        for item in book["steps"] or []
        if item["recommended"]
    }


def test_a_later_clean_run_supersedes_the_finding_and_its_recommendation(incident, responder, rf):
    found = check(incident, responder, evidence=["long_running_queries"])
    assert recommended(rf, incident, responder) == {"test.act": ["long_running_queries"]}
    (finding,) = services.findings(incident)
    assert (finding.key, finding.run, finding.found_at) == (
        "long_running_queries",
        found.pk,
        found.finished_at,
    )
    assert finding.current

    clean = check(incident, responder)
    assert services.evidence_found(incident) == {}
    assert recommended(rf, incident, responder) == {}
    (finding,) = services.findings(incident)
    assert not finding.current
    assert (finding.run, finding.superseded_by, finding.superseded_at) == (
        found.pk,
        clean.pk,
        clean.finished_at,
    )
    # Found again later: current again, with the new run's time.
    again = check(incident, responder, evidence=["long_running_queries"])
    assert services.evidence_found(incident)["long_running_queries"]["run"] == again.pk
    assert [f.current for f in services.findings(incident)] == [True]


def test_a_run_that_could_not_look_supersedes_nothing(incident, responder, rf):
    check(incident, responder, evidence=["long_running_queries"])
    failed = check(incident, responder, fail="permanent")
    assert failed.status == "failed"
    assert set(services.evidence_found(incident)) == {"long_running_queries"}
    assert recommended(rf, incident, responder) == {"test.act": ["long_running_queries"]}


def test_another_targets_clean_run_leaves_the_finding(incident, responder, api_target):
    other = Target.objects.create(name="lotolink-api-2", kind="http", url="http://127.0.0.1:1/")
    check(incident, responder, api_target, evidence=["long_running_queries"])
    check(incident, responder, other)
    (finding,) = services.findings(incident)
    assert finding.current and finding.target == "lotolink-api"
    check(incident, responder, api_target)
    assert not services.findings(incident)[0].current
