"""A check run's bookkeeping, counted: the worker's round trips to the database for
one run, from the claim to the result on the timeline (the probe itself makes none)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from diagnostics import services
from diagnostics.models import RunStatus
from diagnostics.tasks import run_check
from diagnostics.verification import verify_action_item
from incidents.models import ActionItem, ActionItemStatus
from tests import factories
from tests.diagnostics.conftest import TOKEN, step

pytestmark = pytest.mark.django_db


def run_counted(run_id: int) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        run_check.apply(args=(run_id,))
    return [q["sql"] for q in queries.captured_queries]


def test_a_check_run_costs_a_fixed_handful_of_queries(responder, testbook, api_target):
    incident = factories.declare(actor=responder, category="database", title="Counted")
    diag = step("diag")
    diag.params = {"lines": 3, "leak_secret": True}
    diag.save()
    (first,) = services.request_check(incident, diag, actor=responder)
    run_counted(first.pk)  # fills the per-process caches (target secret names)
    other = factories.declare(actor=responder, category="database", title="Counted again")
    (second,) = services.request_check(other, diag, actor=responder)
    queries = run_counted(second.pk)
    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED
    assert TOKEN not in second.output and "•••" in second.output  # still masked
    assert second.output.count("line") == 3
    expected = [
        'UPDATE "diagnostics_checkrun" SET',  # the claim
        'SELECT "diagnostics_checkrun"."id"',  # the run, step, target, incident, items
        "SAVEPOINT",  # finish_run's transaction (BEGIN outside this test's)
        'UPDATE "diagnostics_checkrun" SET',  # the result and the last output, one write
        'SELECT "incidents_incident"."id"',  # the timeline: the incident's lock,
        'SELECT MAX("incidents_timelineevent"."seq")',  # its next seq,
        'INSERT INTO "incidents_timelineevent"',  # the event
        "RELEASE SAVEPOINT",  # COMMIT
    ]
    assert len(queries) == len(expected), "\n".join(queries)
    for sql, start in zip(queries, expected, strict=True):
        assert sql.startswith(start), sql
    # The targets' secret names come from the process's cache, not a query per run.
    assert not [sql for sql in queries if 'FROM "diagnostics_target"' in sql]


def test_a_run_that_verifies_an_action_item_still_verifies_it(responder, testbook, api_target):
    incident = factories.declare(actor=responder, category="database", title="Verified")
    item = ActionItem.objects.create(incident=incident, text="Add an index", step=step("diag"))
    run = verify_action_item(item, actor=responder)
    run_check.apply(args=(run.pk,))
    item.refresh_from_db()
    assert item.status == ActionItemStatus.VERIFIED
