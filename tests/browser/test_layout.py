"""The pages a responder works from, on a laptop (1440 x 900) and a phone (390 x 844):
nothing scrolls sideways, no card covers another, a message shows up where the
button was pressed (and in view), axe-core finds nothing serious, and the incident
can be worked with the keyboard alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from diagnostics.models import CheckRun, Runbook, RunbookStep, Target
from diagnostics.seed import seed_runbooks
from diagnostics.services import request_check
from diagnostics.tasks import run_check
from incidents import services
from incidents.models import Incident, Status
from tests import factories

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

VIEWPORTS = {"laptop": (1440, 900), "phone": (390, 844)}
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js"
PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# Top-level boxes of a page: cards and the like that are not inside another one.
BOXES_JS = """() => {
  const sel = ".card, .incident-header, .compose > form, form.filters, table.incidents, " +
              ".table-scroll, .charts > *, .timeline";
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (el.parentElement && el.parentElement.closest(sel)) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    out.push({name: (el.tagName + "#" + (el.id || "") + "." + el.className).slice(0, 80),
              l: r.left + scrollX, t: r.top + scrollY,
              r: r.right + scrollX, b: r.bottom + scrollY});
  }
  return out;
}"""


@pytest.fixture
def scene(responder):
    """A database incident worked for a while (notes, a status update, a tick, two check
    results with output), a resolved one with its post-mortem, two more open ones."""
    seed_runbooks()
    responder.user_permissions.add(Permission.objects.get(codename="run_actions"))
    Target.objects.create(name="lotolink-db", kind="postgres", url=PG_URL)
    incident = factories.declare(
        actor=responder, category="database", severity="P2",
        title="Checkout queries hang on the main database and time out for most users",
    )  # fmt: skip
    services.acknowledge_incident(incident, actor=responder)
    services.add_note(incident, "p95 of /checkout at 28 s; the DB CPU is flat.", actor=responder)
    services.post_status_update(incident, "Checkout is slow; looking at the DB.", actor=responder)
    first_item = incident.checklist.order_by("pk").first()
    services.set_checklist_item(first_item, done=True, actor=responder)
    for key in ("db.active_queries", "db.locks"):
        for run in request_check(incident, RunbookStep.objects.get(key=key), actor=responder):
            run_check.apply(args=(run.pk,))
    # Resolves at once, as without recovery checks (tests/diagnostics/test_recovery.py
    # covers verified recovery).
    Runbook.objects.update(recovery_checks=[])
    resolved = factories.declare(actor=responder, title="Stripe webhooks failing", severity="P1")
    services.acknowledge_incident(resolved, actor=responder)
    services.transition_incident(resolved, Status.RESOLVED, actor=responder)
    factories.declare(actor=responder, title="Banca Central health check failing", severity="P2",
                      category="banca")  # fmt: skip
    factories.declare(actor=responder, title="Draws page slow", severity="P3")
    return {"incident": incident, "resolved": resolved}


@pytest.fixture
def open_as(login):
    """A fresh context of the given size, logged in as `user` through the login form."""

    def _open(user, viewport: str):
        width, height = VIEWPORTS[viewport]
        # bypass_csp: only so that axe-core can be injected (the site allows no inline script).
        return login(user, width=width, height=height, bypass_csp=True)

    return _open


def assert_fits(page, where: str) -> None:
    """No sideways scrolling of the page, no two top-level boxes overlapping, every box
    inside the viewport's width."""
    width = page.evaluate("() => window.innerWidth")
    scroll = page.evaluate("() => document.scrollingElement.scrollWidth")
    assert scroll <= width, f"{where}: the page scrolls sideways ({scroll} > {width} px)"
    boxes = page.evaluate(BOXES_JS)
    assert len(boxes) >= 2, f"{where}: no cards found ({boxes})"
    for box in boxes:
        assert box["l"] >= -1 and box["r"] <= width + 1, f"{where}: {box} sticks out"
    overlaps = [
        (a["name"], b["name"])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if min(a["r"], b["r"]) - max(a["l"], b["l"]) > 1
        and min(a["b"], b["b"]) - max(a["t"], b["t"]) > 1
    ]
    assert not overlaps, f"{where}: overlapping cards {overlaps}"


def axe_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    checked, result = page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return [r.passes.length, r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 4)"
        ".map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').split('\\n')[1])"
        ".join(' | '))]; }"
    )
    assert checked > 10, "axe-core did not run its rules"
    return list(result)


def in_view(page, locator, within: float = 2.0) -> bool:
    """In the viewport and not under the incident's sticky header, within `within` s:
    the page reveals a message when htmx settles it, a moment after it is drawn."""
    deadline = time.monotonic() + within
    while not _in_view_now(page, locator) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _in_view_now(page, locator)


def _in_view_now(page, locator) -> bool:
    box = locator.bounding_box()
    top, height = page.evaluate(
        "() => { const h = document.getElementById('incident-header');"
        " return [h ? Math.max(0, h.getBoundingClientRect().bottom) : 0, innerHeight]; }"
    )
    return box is not None and box["y"] >= top - 1 and box["y"] + min(box["height"], 40) <= height


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_every_page_fits_and_axe_finds_nothing_serious(open_as, responder, scene, viewport):
    page = open_as(responder, viewport)
    incident, resolved = scene["incident"], scene["resolved"]
    pages = {
        "dashboard": "/",
        "incident": f"/incidents/{incident.pk}/",
        "declare": "/incidents/declare/",
        "post-mortem": f"/incidents/{resolved.pk}/postmortem/",
        "reports": "/reports/",
    }
    problems = {}
    for name, path in pages.items():
        page.goto(path)
        page.wait_for_load_state("load")
        assert_fits(page, f"{name} at {viewport}")
        if found := axe_violations(page):
            problems[name] = found
    assert not problems, problems
    # The things this layout promises, looked at directly.
    page.goto(f"/incidents/{incident.pk}/")
    header = page.locator("#incident-header")
    runbook = page.locator("#runbook")
    assert runbook.bounding_box()["y"] < page.locator("#timeline").bounding_box()["y"]
    assert runbook.bounding_box()["y"] - header.bounding_box()["y"] < 260  # right under it
    page.mouse.wheel(0, 2500)
    page.wait_for_timeout(200)
    assert page.evaluate("() => scrollY") > 1000
    assert 0 <= header.bounding_box()["y"] < 20  # sticky: status, SLA and actions in reach
    assert page.locator("#incident-status").is_visible()
    if viewport == "phone":
        # The dashboard keeps the SLA column on a phone (less urgent ones give way).
        page.goto("/")
        sla = page.locator("table.open-incidents th", has_text="SLA")
        assert sla.is_visible() and sla.bounding_box()["x"] + 20 < VIEWPORTS["phone"][0]
        for name in ("Declare incident", "Admin", "Log out"):
            control = page.locator(".topbar").get_by_text(name, exact=True)
            if control.count():
                box = control.bounding_box()
                assert box["x"] + box["width"] <= VIEWPORTS["phone"][0], name


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_message_shows_next_to_the_button_pressed(open_as, responder, scene, viewport):
    incident = scene["incident"]
    page = open_as(responder, viewport)
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")

    # Run with no target: the refusal lands inside the step, in view, in a live region.
    disk = page.locator("#runbook li.step[data-step='db.disk']")
    disk.locator("button.run").click()
    refusal = disk.locator(".msg-slot[role=status]")
    refusal.locator(".msg.error").wait_for(timeout=5000)
    assert "No Kubernetes target is configured" in refusal.inner_text()
    assert in_view(page, refusal)
    assert page.locator("#flash").inner_text().strip() == ""  # not only at the top any more

    # Run all: what was queued and each step skipped, by name, next to Run all.
    page.locator("button.run-all[data-runbook=database]").click()
    said = page.locator("#runbook details[data-runbook=database] > .msg-slot .msg")
    said.wait_for(timeout=5000)
    assert "Queued" in said.inner_text() and "db.disk" in said.inner_text()
    assert in_view(page, said)
    page.wait_for_function(
        "() => document.getElementById('announcer').textContent.includes('Skipped')"
    )

    # Review… opens the plan's form under its own button, in view, with focus in it.
    vacuum = page.locator("#runbook li.step[data-step='db.vacuum']")
    vacuum.locator("a.review").click()
    review = vacuum.locator(".action-slot .action-review")
    review.wait_for(timeout=5000)
    assert in_view(page, review)
    assert page.evaluate("() => !!document.activeElement.closest('.action-review')")
    review.locator("#review-action").click()
    answer = vacuum.locator(".action-slot :is(.plan, .msg.error, .field-error)")
    answer.first.wait_for(timeout=10000)
    assert in_view(page, answer.first)


def test_double_click_on_run_sends_one_request(open_as, responder, scene):
    page = open_as(responder, "laptop")
    page.goto(f"/incidents/{scene['incident'].pk}/")
    page.wait_for_selector("body[data-live=open]")
    before = CheckRun.objects.filter(step__key="db.slow_queries").count()
    page.locator("#runbook li.step[data-step='db.slow_queries'] button.run").dblclick()
    page.locator("#runbook li.step[data-step='db.slow_queries'] .msg-slot .msg").wait_for()
    page.wait_for_timeout(500)
    assert CheckRun.objects.filter(step__key="db.slow_queries").count() == before + 1


def test_the_answer_lands_even_when_the_stream_redrew_the_runbook_meanwhile(
    open_as, responder, scene
):
    """Run's request is held until the live stream has redrawn the whole runbook (another
    responder ran a check): the answer still shows up next to the new Run button."""
    incident = scene["incident"]
    page = open_as(responder, "phone")
    page.goto(f"/incidents/{incident.pk}/")
    page.wait_for_selector("body[data-live=open]")
    held = []
    page.route("**/steps/db.slow_queries/run/", lambda route: held.append(route))
    page.evaluate("() => { document.getElementById('runbook').dataset.old = '1'; }")
    step = page.locator("#runbook li.step[data-step='db.slow_queries']")
    step.locator("button.run").click()
    page.wait_for_function("() => document.querySelector('#runbook li.step button.run[disabled]')")
    # Someone else runs a check (not the scene's own run of it again, which within
    # two seconds would only get that run back).
    request_check(incident, RunbookStep.objects.get(key="db.locks"), actor=None)
    page.wait_for_function("() => !document.getElementById('runbook').dataset.old", timeout=15000)
    assert held, "Run's request was not sent"
    held[0].continue_()
    step.locator(".msg-slot .msg").wait_for(timeout=15000)
    assert "Queued 1 run on lotolink-db" in step.locator(".msg-slot").inner_text()
    assert in_view(page, step.locator(".msg-slot"))


def test_text_typed_while_a_note_is_sent_is_kept(open_as, responder, scene):
    page = open_as(responder, "phone")
    page.goto(f"/incidents/{scene['incident'].pk}/")
    held = []
    page.route("**/notes/", lambda route: held.append(route))
    page.fill("#note-text", "Killed pid 4242")
    page.click("#add-note")
    page.wait_for_function("() => document.querySelector('#add-note').disabled")
    page.locator("#note-text").press("End")
    page.keyboard.type(" — and the next one")
    assert held, "the note's request was not sent"
    held[0].continue_()
    page.wait_for_function("() => !document.querySelector('#add-note').disabled")
    assert page.input_value("#note-text") == "— and the next one"
    note = scene["incident"].timeline.filter(kind="note").order_by("-seq").first()
    assert note.message == "Killed pid 4242"


def focused(page) -> dict:
    return page.evaluate(
        "() => { const e = document.activeElement; return {tag: e.tagName, id: e.id,"
        " text: (e.innerText || e.value || '').trim().slice(0, 60),"
        " name: e.getAttribute('aria-label') || e.getAttribute('name') || ''}; }"
    )


def tab_to(page, match, limit: int = 60) -> int:
    """Press Tab until the focused element matches; the number of presses."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if match(focused(page)):
            return presses
    raise AssertionError(f"not reached in {limit} Tabs; last focus {focused(page)}")


def test_keyboard_only_declare_acknowledge_and_run_a_check(open_as, responder, scene):
    Incident.objects.exclude(pk=scene["incident"].pk).delete()
    page = open_as(responder, "laptop")
    page.goto("/")

    # Declare: Tab to the top bar's button, Enter, fill the form with keys alone.
    tab_to(page, lambda f: f["text"] == "Declare incident")
    page.keyboard.press("Enter")
    page.wait_for_url("**/incidents/declare/")
    tab_to(page, lambda f: f["id"] == "id_title")
    page.keyboard.type("Replica lag on the reporting database")
    tab_to(page, lambda f: f["id"] == "id_category")
    page.keyboard.type("Database")  # a focused select picks by typing
    assert page.input_value("#id_category") == "database"
    tab_to(page, lambda f: f["id"] == "id_severity")
    page.keyboard.type("P3")
    assert page.locator("#id_severity option:checked").inner_text().startswith("P3")
    tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Declare incident")
    page.keyboard.press("Enter")
    page.wait_for_selector("#incident-header")
    incident = Incident.objects.get(title="Replica lag on the reporting database")
    page.wait_for_selector("body[data-live=open]")

    # Acknowledge: reached with Tab, pressed with Enter; focus stays in the header.
    tab_to(page, lambda f: f["id"] == "acknowledge")
    page.keyboard.press("Enter")
    page.wait_for_selector("#incident-status:text-is('Acknowledged')")
    page.wait_for_timeout(100)
    assert focused(page)["id"] == "incident-header", focused(page)
    incident.refresh_from_db()
    assert incident.status == Status.ACKNOWLEDGED

    # The skip link takes the keyboard to the runbook: a few Tabs to the first Run.
    page.goto(page.url)  # the page again, from its top
    page.wait_for_selector("body[data-live=open]")
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Skip to the runbook"
    page.keyboard.press("Enter")
    presses = tab_to(page, lambda f: f["name"] == "Run Non-idle activity")
    assert presses <= 6, presses
    run_id = focused(page)["id"]
    page.keyboard.press("Space")
    step = page.locator("#runbook li.step[data-step='db.active_queries']")
    step.locator(".msg-slot .msg").wait_for(timeout=5000)
    assert "Queued 1 run on lotolink-db" in step.locator(".msg-slot").inner_text()
    assert focused(page)["id"] == run_id  # focus back on Run after the panel was redrawn
    assert CheckRun.objects.filter(incident=incident, step__key="db.active_queries").count() == 1

    # A checklist tick with Space: the toggle is named by its item and keeps the focus.
    item = incident.checklist.order_by("pk").first()
    tab_to(page, lambda f: f["id"] == f"check-toggle-{item.pk}", limit=120)
    page.keyboard.press("Space")
    page.wait_for_selector(f"#check-item-{item.pk}.done")
    page.wait_for_timeout(100)
    assert focused(page)["id"] == f"check-toggle-{item.pk}"
    name = page.evaluate(f"() => document.getElementById('check-text-{item.pk}').textContent")
    assert name == item.text
