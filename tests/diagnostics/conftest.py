from __future__ import annotations

import pytest

from diagnostics.models import Runbook, RunbookStep, Target
from tests.diagnostics import engine_probes  # noqa: F401  (registers test.echo, test.restart)
from tests.diagnostics.worker import start_worker  # noqa: F401  (fixture)

TOKEN = "tok-9f8e7d6c5b4a-secret"


@pytest.fixture
def api_target(db, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_TEST_TOKEN", TOKEN)
    return Target.objects.create(
        name="lotolink-api",
        kind="http",
        url="http://127.0.0.1:1/health",
        secret_env="LOTOOPS_TARGET_TEST_TOKEN",
    )


@pytest.fixture
def testbook(runbook):
    book = Runbook.objects.create(
        key="testbook", title="Test procedure", section="9", categories=["database"], order=99
    )
    steps = {
        "diag": dict(
            title="Echo check", kind="diagnostic", probe="test.echo", finds=["long_running_queries"]
        ),
        "other": dict(
            title="Second check", kind="diagnostic", probe="test.echo", params={"lines": 1}
        ),
        "soon": dict(title="Pods", kind="diagnostic", probe="test.to_come"),
        "act": dict(
            title="Restart workers",
            kind="action",
            probe="test.restart",
            recommended_by=["long_running_queries"],
        ),
    }
    for order, (key, values) in enumerate(steps.items()):
        RunbookStep.objects.create(
            runbook=book, key=f"test.{key}", order=order, target_kind="http", **values
        )
    return book


def step(key: str) -> RunbookStep:
    return RunbookStep.objects.get(key=f"test.{key}")
