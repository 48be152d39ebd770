"""Two responders on one incident, each in their own browser."""

from __future__ import annotations

import time

import pytest

from incidents import services, timeline
from incidents.models import EventKind, Status
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_acknowledge_in_one_browser_appears_in_the_other_within_a_second(
    login, responder, other_responder
):
    incident = factories.declare(actor=responder, title="Checkout failing", severity="P0")
    ana = login(responder)
    ben = login(other_responder)
    for page in (ana, ben):
        page.goto(f"/incidents/{incident.pk}/")
        page.wait_for_selector("body[data-live=open]")
    ben.evaluate("() => { window.__notReloaded = true; }")
    # Both streams are open before anyone acts.
    ben.wait_for_load_state("load")
    time.sleep(0.3)

    ana.click("#acknowledge")
    started = time.monotonic()
    ben.wait_for_selector("#timeline li.kind-acknowledged", timeout=3000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert "ana acknowledged" in ben.inner_text("#timeline li.kind-acknowledged")
    # The header followed (out of band) and the page was never reloaded.
    ben.wait_for_selector("#incident-status:text-is('Acknowledged')", timeout=1000)
    assert ben.evaluate("() => window.__notReloaded") is True
    assert ben.locator("#acknowledge").count() == 0
    incident.refresh_from_db()
    assert incident.status == Status.ACKNOWLEDGED


def test_a_note_from_elsewhere_and_a_checklist_tick_appear_live(login, responder, other_responder):
    incident = factories.declare(
        actor=responder, title="Banca Central down", severity="P2", category="banca"
    )
    ben = login(other_responder)
    ben.goto(f"/incidents/{incident.pk}/")
    ben.wait_for_selector("body[data-live=open]")  # the live stream is open
    time.sleep(0.3)
    item = incident.checklist.get(text="Identify impacted services")
    services.add_note(incident, "Banca Central answers 502", actor=responder)
    services.set_checklist_item(item, done=True, actor=responder)
    ben.wait_for_selector("text=Banca Central answers 502", timeout=2000)
    ben.wait_for_selector(f"#check-item-{item.pk}.done", timeout=2000)
    # Every event exactly once.
    assert ben.locator("#timeline li.kind-note").count() == 1


def notes_on(page) -> list[str]:
    return page.locator("#timeline li.kind-note .message").all_inner_texts()


def test_the_extensions_recreated_connection_resumes_after_the_last_id(login, responder):
    incident = factories.declare(actor=responder, title="Flaky network")
    ana = login(responder)
    streams: list[str] = []
    ana.on("request", lambda r: streams.append(r.url) if "/stream/" in r.url else None)
    ana.goto(f"/incidents/{incident.pk}/")
    ana.wait_for_selector("body[data-live=open]")  # the live stream is open
    time.sleep(0.3)
    services.add_note(incident, "before the drop", actor=responder)
    ana.wait_for_selector("text=before the drop", timeout=2000)
    last_seen = incident.timeline.order_by("-seq").first().seq
    # Kill the EventSource the way a network error does: the extension then
    # re-creates it, and that new connection carries no Last-Event-ID header.
    ana.evaluate(
        """() => {
        const source = htmx.find('#live')['htmx-internal-data'].sseEventSource;
        source.close();
        source.onerror(new Event('error'));
    }"""
    )
    services.add_note(incident, "during the drop", actor=responder)
    ana.wait_for_selector("text=during the drop", timeout=4000)
    services.add_note(incident, "after the drop", actor=responder)
    ana.wait_for_selector("text=after the drop", timeout=2000)
    assert sorted(notes_on(ana)) == ["after the drop", "before the drop", "during the drop"]
    assert streams[-1].endswith(f"?after={last_seen}"), streams


def test_streams_recycled_by_the_server_lose_and_double_nothing(login, responder, settings):
    settings.SSE_MAX_DURATION = 0.5  # the server ends every stream after 0.5 s
    incident = factories.declare(actor=responder, title="Recycled streams")
    ana = login(responder)
    ana.goto(f"/incidents/{incident.pk}/")
    ana.wait_for_selector("body[data-live=open]")  # the live stream is open
    expected = []
    for n in range(8):
        text = f"note {n}"
        services.add_note(incident, text, actor=responder)
        expected.append(text)
        time.sleep(0.3)
    ana.wait_for_selector("text=note 7", timeout=4000)
    time.sleep(1.5)  # more reconnects: nothing may arrive twice
    assert sorted(notes_on(ana)) == sorted(expected)


def test_panels_follow_live_for_each_viewer(login, responder, other_responder):
    """Flags set in one page leave both with the flags form; resolving in one brings
    the follow-up checklists and the post-mortem card to the other; a failing check
    result reads as failing, in red. Nobody reloads."""
    incident = factories.declare(actor=responder, title="Payments slow", severity="P1")
    services.acknowledge_incident(incident, actor=responder)
    services.transition_incident(incident, Status.MITIGATED, actor=responder, note="scaled up")
    ana = login(responder)
    ben = login(other_responder)
    for page in (ana, ben):
        page.goto(f"/incidents/{incident.pk}/")
        page.wait_for_selector("body[data-live=open]")
        page.evaluate("() => { window.__notReloaded = true; }")
    time.sleep(0.3)

    ana.check("#whos-told form.flags input[value=data_loss]")
    ana.click("#whos-told form.flags button[type=submit]")
    for page in (ana, ben):
        page.wait_for_selector("#timeline li.kind-escalation", timeout=3000)
        page.wait_for_selector("#whos-told .flag-data_loss", timeout=2000)
        # The card was redrawn for each viewer: both can still set flags.
        assert page.locator("#whos-told form.flags button[type=submit]").count() == 1

    assert ben.locator("#postmortem-link a").count() == 0
    ana.click("#incident-header button[data-status=resolved]")
    ben.wait_for_selector("#incident-status:text-is('Resolved')", timeout=3000)
    ben.wait_for_selector("#postmortem-link a:text('Open the post-mortem')", timeout=2000)
    ben.wait_for_selector("#checklist h3:text-is('Within 24 hours')", timeout=2000)
    assert ben.locator("#checklist h3:text-is('Within 1 week')").count() == 1
    assert ben.locator("#incident-forms button:text('Change severity')").count() == 0

    timeline.append_event(
        incident,
        EventKind.CHECK_RESULT,
        "db.locks on lotolink failing: 2 sessions waiting for a lock",
        data={"status": "succeeded", "outcome": "failing"},
    )
    result = ben.wait_for_selector("#timeline li.result-failing", timeout=3000)
    assert result.query_selector(".outcome").inner_text().lower() == "failing"
    colour = result.evaluate("el => getComputedStyle(el).borderLeftColor")
    assert colour == "rgb(200, 37, 31)", colour  # --danger
    for page in (ana, ben):
        assert page.evaluate("() => window.__notReloaded") is True


def test_a_note_marked_as_the_root_cause_then_undone_in_the_browser(login, responder):
    """The "Mark as…" control on a timeline event, its mark arriving live with its
    own Undo, and the undo."""
    incident = factories.declare(actor=responder, title="Payments slow", severity="P2")
    note = services.add_note(incident, "pgbouncer: pool exhausted", actor=responder)
    ana = login(responder)
    ana.goto(f"/incidents/{incident.pk}/")
    ana.wait_for_selector("body[data-live=open]")
    ana.click(f"#event-{note.pk} summary")
    ana.click(f'[data-mark="{note.pk}-root_cause"]')
    mark = ana.wait_for_selector("#timeline li.kind-note:has-text('as root cause identified')")
    assert "pgbouncer: pool exhausted" in mark.inner_text()
    mark.query_selector("button[data-undo-mark]").click()
    ana.wait_for_selector("#timeline li.kind-note:has-text('undid the mark')", timeout=3000)
    assert incident.timeline.filter(data__has_key="milestone").count() == 2
    assert list(incident.timeline.filter(data__has_key="undo").values_list("actor", flat=True)) == [
        responder.pk
    ]
