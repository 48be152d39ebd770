"""The API fuzzed from its own OpenAPI schema (schemathesis) against the live ASGI
server: no server error and no response outside its schema, whatever is sent."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import tokens
from diagnostics.models import Runbook, RunbookStep, Target
from diagnostics.seed import seed_runbooks
from diagnostics.services import request_check
from incidents import services
from incidents.models import Category, Status
from incidents.postincident.actionitems import add_action_item
from tests import factories
from tests.incidents.live_helpers import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@pytest.fixture
def live_api(asgi_server, responder):
    """The schema as served, with a responder's token and something to find: an open
    incident, a restricted one, a resolved one with its post-mortem and an item."""
    seed_runbooks()
    # Resolving resolves at once here, as for a procedure without recovery checks
    # (verified recovery has its own tests: tests/diagnostics/test_recovery.py).
    Runbook.objects.update(recovery_checks=[])
    Target.objects.create(name="db", kind="postgres", url="postgresql://x@127.0.0.1:1/x")
    opened = factories.declare(actor=responder, title="Open")
    secret = factories.declare(
        actor=factories.UserFactory(username="sec"), title="Breach", category=Category.SECURITY
    )
    done = factories.declare(actor=responder, title="Done")
    services.acknowledge_incident(done, actor=responder)
    services.transition_incident(done, Status.RESOLVED, actor=responder)
    [run] = request_check(opened, RunbookStep.objects.get(key="db.locks"), actor=responder)
    item = add_action_item(done, text="Canary", owner=None, due_date=None, actor=responder)
    _, token = tokens.issue(responder, "fuzz")
    # The schema is behind the site's login (the operations take the token).
    signed_in = session_cookie(responder)["sessionid"]
    schema = schemathesis.openapi.from_url(
        f"{asgi_server.url}/api/v1/openapi.json", headers={"Cookie": f"sessionid={signed_in}"}
    )
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    KNOWN.update(incident_id=[opened.pk, secret.pk, done.pk], run_id=[run.pk], item_id=[item.pk])
    return schema


# Ids that exist: most generated path ids are steered onto them (the rest stay random),
# so operations are exercised on real objects, not only answered 404.
KNOWN: dict[str, list[int]] = {}


def steer(case) -> None:
    for name, ids in KNOWN.items():
        value = (case.path_parameters or {}).get(name)
        if isinstance(value, int) and value % 5:
            case.path_parameters[name] = ids[value % len(ids)]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_the_api_never_fails_and_keeps_to_its_schema(live_api):
    # Each operation in turn, from its own strategy (schemathesis' pytest fixture
    # loader does not run under pytest 9 yet).
    operations = [result.ok() for result in live_api.get_all_operations()]
    assert len(operations) == 16
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case):
            steer(case)
            response = case.call_and_validate(checks=CHECKS)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        fuzz()

    # The token worked: every operation answered something other than 401 at least once,
    # and the reads and the declaration succeeded at least once.
    assert all(codes - {401} for codes in seen.values()), seen
    assert 200 in seen["GET /api/v1/incidents"] and 201 in seen["POST /api/v1/incidents"], seen
    assert 200 in seen["GET /api/v1/incidents/{incident_id}/timeline"], seen
    assert 404 in seen["GET /api/v1/incidents/{incident_id}"], seen  # the restricted one
    print({label: sorted(codes) for label, codes in seen.items()})
