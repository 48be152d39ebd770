from __future__ import annotations

import pytest

from alerts import tokens
from alerts.seed import seed_alerts
from diagnostics.models import Target
from diagnostics.seed import seed_runbooks


@pytest.fixture
def alert_rules(runbook: None) -> None:
    seed_runbooks()
    seed_alerts()


@pytest.fixture
def pg_target(db: None) -> Target:
    """Where the database procedure's diagnostics point (never reached: no worker)."""
    return Target.objects.create(
        name="lotolink-db", kind="postgres", url="postgresql://lotolink@127.0.0.1:1/lotolink"
    )


@pytest.fixture
def am_token(alert_rules: None) -> str:
    _, token = tokens.issue("alertmanager-test")
    return token


@pytest.fixture
def am_post(client, am_token):
    def post(body, token: str | None = None, **extra):
        import json

        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return client.post(
            "/hooks/alertmanager/",
            data=data,
            content_type="application/json",
            headers={"Authorization": f"Bearer {token or am_token}"},
            **extra,
        )

    return post
