"""A check run's live output on the open pages: fetched and drawn once per process per
change, shared by every open stream of the incident (as the panel renderings are),
not once per open page."""

from __future__ import annotations

import time

import pytest
from django.db.models import F, Value
from django.db.models.functions import Concat

from diagnostics.models import CheckRun, RunStatus
from incidents import live
from tests import factories
from tests.diagnostics.conftest import step
from tests.incidents.live_helpers import session_cookie
from tests.incidents.test_stream_scale import (  # noqa: F401  (fixtures)
    open_streams,
    prefix,
    queries_of_other_threads,
    with_redis,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

CHANGES = 5


def live_item_queries(queries: list[str]) -> int:
    """The live-output fetch (runs active or just finished), not the polls' counts."""
    return sum('"diagnostics_checkrun"' in q and '"finished_at" >=' in q for q in queries)


def received(chunks: list[str], text: str) -> bool:
    return text in "".join(chunks)


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the streams did not receive the output in time")
        time.sleep(0.02)


def fetches_for(url: str, cookies: dict[str, str], run: CheckRun, streams: int) -> int:
    """How many times the server fetched the live output while `CHANGES` changes of
    the run reached `streams` open pages."""
    with queries_of_other_threads() as queries, open_streams(url, cookies, streams) as chunks:
        wait_until(lambda: all(received(c, f"check-run-{run.pk}") for c in chunks))
        before = live_item_queries(queries)
        for n in range(CHANGES):
            line = f"output line {streams}-{n}"
            CheckRun.objects.filter(pk=run.pk).update(
                output=Concat(F("output"), Value(f"{line}\n")), version=F("version") + 1
            )
            live.publish(run.incident_id, 0)  # what the worker does on each change
            wait_until(lambda line=line: all(received(c, line) for c in chunks))
        return live_item_queries(queries) - before


@pytest.mark.usefixtures("with_redis")
def test_n_open_streams_fetch_a_runs_output_as_often_as_one(
    asgi_server, settings, responder, testbook
):
    settings.SSE_SAFETY_POLL = 3600  # only the publishes wake the streams here
    incident = factories.declare(actor=responder, category="database")
    run = CheckRun.objects.create(
        incident=incident, step=step("diag"), status=RunStatus.RUNNING, output="started\n"
    )
    url = f"{asgi_server.url}/incidents/{incident.pk}/stream/"
    cookies = session_cookie(responder)

    one = fetches_for(url, cookies, run, 1)
    many = fetches_for(url, cookies, run, 20)

    assert one == CHANGES, one  # once per change
    assert many == one, (one, many)  # not once per open page
