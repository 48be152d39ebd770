from __future__ import annotations

import pytest

from diagnostics.models import Target
from diagnostics.seed import seed_runbooks
from tests.diagnostics.pg_helpers import reachable
from tests.impact.platform_db import PLATFORM_URL, create_platform_db


@pytest.fixture(scope="session")
def platform_db() -> str:
    """The platform database with plays in known states (created once per session)."""
    if not reachable():
        pytest.fail("the money-at-risk tests need PostgreSQL on 127.0.0.1:5432")
    create_platform_db()
    return PLATFORM_URL


@pytest.fixture
def platform(platform_db, runbook) -> Target:
    """The seeded runbook and a PostgreSQL target pointing at the platform database."""
    from tests.impact.platform_db import reset_plays

    reset_plays()
    seed_runbooks()
    return Target.objects.create(name="lotolink-db", kind="postgres", url=platform_db)
