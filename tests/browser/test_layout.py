"""The pages a responder works from, on a laptop (1440 x 900) and a phone (390 x 844):
nothing scrolls sideways, no card covers another, no focused control is hidden (WCAG 2.2
SC 2.4.11), a phone's targets are big enough (SC 2.5.8), a message shows up where the
button was pressed (and in view), a result landing moves neither the view nor the
focus, axe-core finds nothing serious, and the incident can be worked with the keyboard
alone."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from diagnostics.models import CheckRun, Runbook, RunbookStep, Target
from diagnostics.seed import seed_runbooks
from diagnostics.services import request_check
from diagnostics.tasks import run_check
from incidents import services
from incidents.models import Incident, Status
from incidents.postincident.actionitems import add_action_item
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

PAGES = {
    "dashboard": "/",
    "incident": "/incidents/{incident}/",
    "declare": "/incidents/declare/",
    "post-mortem": "/incidents/{resolved}/postmortem/",
    "action items": "/action-items/",
    "reports": "/reports/",
    "audit": "/audit/",
    "profile": "/profile/",
}

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
    add_action_item(
        resolved, text="Alert on the webhook endpoint's 5xx rate before customers notice it",
        owner=responder, due_date=timezone.localdate() + timedelta(days=14), actor=responder,
    )  # fmt: skip
    factories.declare(actor=responder, title="Banca Central health check failing", severity="P2",
                      category="banca")  # fmt: skip
    factories.declare(actor=responder, title="Draws page slow", severity="P3")
    # Acknowledged three hours late: "SLA breached: acknowledged after 3h 00m" on the
    # dashboard, beside the scene's incident's "SLA met: acknowledged after 0s".
    late = factories.declare(
        actor=responder, severity="P1", category="payment",
        title="Payouts to winners of the Saturday draw are stuck in the reconciliation queue",
    )  # fmt: skip
    Incident.objects.filter(pk=late.pk).update(
        declared_at=late.declared_at - timedelta(hours=3),
        response_deadline=late.response_deadline - timedelta(hours=3),
    )
    late.refresh_from_db()
    services.acknowledge_incident(late, actor=responder)
    responder.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
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
    if scroll > width:
        out = page.evaluate(
            "(w) => [...document.querySelectorAll('main *')].filter(e =>"
            " e.getBoundingClientRect().right > w + 1 && !e.closest('.table-scroll')).slice(-6)"
            ".map(e => e.tagName + '.' + e.className + ' ' + (e.innerText || '').slice(0, 30)"
            " + ' ' + Math.round(e.getBoundingClientRect().width) + 'px')",
            width,
        )
        raise AssertionError(f"{where}: the page scrolls sideways ({scroll} > {width} px): {out}")
    boxes = page.evaluate(BOXES_JS)
    assert boxes, f"{where}: no cards found"
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
    """Each page at each width: no sideways scroll, no overlapping cards, no control hidden
    when focused, big enough targets on a phone (focus_and_size_problems), axe clean."""
    page = open_as(responder, viewport)
    incident = scene["incident"]
    ids = {"incident": incident.pk, "resolved": scene["resolved"].pk}
    problems, walked = {}, []
    for name, path in PAGES.items():
        page.goto(path.format(**ids))
        page.wait_for_load_state("load")
        assert_fits(page, f"{name} at {viewport}")
        walked += focus_and_size_problems(page, name, viewport)
        if found := axe_violations(page):
            problems[name] = found
    assert not problems, problems
    assert not walked, "\n".join(walked)
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
        # Severity, Title, Status and the SLA verdicts all stay (a shorter SLA label).
        for column in ("Sev", "Title", "Status"):
            assert page.locator("table.open-incidents th", has_text=column).first.is_visible()
        verdicts = page.locator("table.open-incidents .sla.done").all_inner_texts()
        assert "SLA breached 3h 00m" in verdicts and "SLA met 0s" in verdicts, verdicts
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


# --- WCAG 2.2 at phone width (issue 28) -------------------------------------------------

# Is the focused element entirely or partly covered? Its centre and corners (inside the
# viewport) must each hit it or something inside it (SC 2.4.11: not hidden by the sticky
# header or anything else the page draws over it).
COVERED_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  // What of it a scrolling box it is in (a wide table's) or the viewport shows.
  let clip = {l: 0, t: 0, r: innerWidth, b: innerHeight};
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflow === "visible") continue;
    const c = a.getBoundingClientRect();
    clip = {l: Math.max(clip.l, c.left), t: Math.max(clip.t, c.top),
            r: Math.min(clip.r, c.right), b: Math.min(clip.b, c.bottom)};
  }
  const points = [];
  // Each line box of a link that wraps, else its one box.
  for (const r of el.getClientRects()) {
    const x0 = Math.max(r.left, clip.l) + 2, x1 = Math.min(r.right, clip.r) - 2;
    const y0 = Math.max(r.top, clip.t) + 2, y1 = Math.min(r.bottom, clip.b) - 2;
    if (x1 < x0 || y1 < y0) continue;
    points.push([(x0 + x1) / 2, (y0 + y1) / 2], [x0, y0], [x1, y0], [x0, y1], [x1, y1]);
  }
  const bad = [];
  for (const [x, y] of points) {
    const hit = document.elementFromPoint(x, y);
    if (hit && (hit === el || el.contains(hit))) continue;
    const what = hit ? (hit.closest("[id]") || hit) : null;
    bad.push([Math.round(x), Math.round(y), what ? what.tagName + "#" + what.id : "nothing"]);
  }
  if (!bad.length) return null;
  const name = (el.getAttribute("aria-label") || el.innerText || el.id || "").trim();
  return el.tagName + " '" + name.slice(0, 40) + "' under " + JSON.stringify(bad);
}"""

# The controls a finger must hit: their box (buttons, links drawn as buttons, form
# fields, disclosure summaries, the top bar's links), smaller than `least` px either way.
SMALL_TARGETS_JS = """([selector, least]) => {
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const r = el.getBoundingClientRect();
    // Not shown at this width, or inside a closed <details>.
    if (r.width === 0 || r.height === 0 || !el.checkVisibility()) continue;
    if (r.width < least - 0.01 || r.height < least - 0.01) {
      const name = (el.getAttribute("aria-label") || el.innerText || el.name || el.id || "");
      out.push(el.tagName + " '" + name.trim().slice(0, 40) + "' " +
               r.width.toFixed(1) + "x" + r.height.toFixed(1));
    }
  }
  return out;
}"""
CONTROLS = (
    "button, a.button, input:not([type=hidden]), select, textarea, summary, .topbar a, #runbook a"
)


def uncovered_walk(page, key: str, limit: int = 250) -> tuple[int, list[str]]:
    """Press `key` (Tab or Shift+Tab) from the page's top until the focus comes back
    round: the number of stops, and each one that was covered when focused."""
    page.evaluate("() => { window.scrollTo(0, 0); document.activeElement.blur(); }")
    seen, covered = [], []
    for _ in range(limit):
        page.keyboard.press(key)
        where = page.evaluate(
            "() => { const e = document.activeElement; if (e === document.body) return 0;"
            " window.walked = window.walked || new WeakMap();"
            " if (!walked.has(e)) walked.set(e, window.walkN = (window.walkN || 0) + 1);"
            " return walked.get(e); }"
        )  # a number per element (two links may share a text, a place and an address)
        if seen and where in (0, seen[0]):  # round, or out of the page and about to be
            break
        if where:
            seen.append(where)
            if problem := page.evaluate(COVERED_JS):
                covered.append(problem)
    return len(seen), covered


def focus_and_size_problems(page, name: str, viewport: str) -> list[str]:
    """Tab and Shift+Tab through the page: no focused control hidden, even partly (by the
    sticky incident header or anything else); on a phone every control at least 24 x 24
    px and the runbook's Run, Run all and Review 44 px."""
    problems, stops = [], {}
    if name == "incident":
        page.wait_for_selector("body[data-live=open]")
        assert page.locator("#runbook details[open] button.run").count() >= 3
    for key in ("Tab", "Shift+Tab"):
        stops[key], covered = uncovered_walk(page, key)
        problems += [f"covered, {name} {key}: {covered}"] if covered else []
    assert stops["Tab"] > 3 and abs(stops["Tab"] - stops["Shift+Tab"]) <= 1, (name, stops)
    if viewport == "phone":
        if found := page.evaluate(SMALL_TARGETS_JS, [CONTROLS, 24]):
            problems.append(f"too small, {name}: {found}")
        if name == "incident":
            runbook = "#runbook button.run, #runbook a.review, #runbook button.run-all"
            if found := page.evaluate(SMALL_TARGETS_JS, [runbook, 44]):
                problems.append(f"too small, the runbook's Run and Review: {found}")
    return problems


def test_a_result_landing_keeps_the_view_the_focus_and_the_run_button(
    open_as, responder, scene, start_worker
):
    """Run a check, then let a real worker produce its result while the page is scrolled to
    the button: the live redraw of the runbook moves neither the view nor the focus. The
    run's number is made equal to its step's: a run's box and a step's Run button never
    share an id, so the run's live update cannot replace the button."""
    incident = scene["incident"]
    keys = ("db.slow_queries", "db.active_queries", "db.locks")
    step = next(
        s
        for s in RunbookStep.objects.filter(key__in=keys).order_by("pk")
        if not CheckRun.objects.filter(pk=s.pk).exists()
    )
    with connection.cursor() as cursor:  # the next check run's number is the step's
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)",
            [CheckRun._meta.db_table, step.pk],
        )
    pages = {viewport: open_as(responder, viewport) for viewport in VIEWPORTS}
    for page in pages.values():
        page.goto(f"/incidents/{incident.pk}/")
        page.wait_for_selector("body[data-live=open]")
    page = pages["phone"]
    button = page.locator(f"#runbook li.step[data-step='{step.key}'] button.run")
    button.press("Enter")
    slot = page.locator(f"#runbook li.step[data-step='{step.key}'] .msg-slot .msg")
    slot.wait_for(timeout=5000)
    assert "Queued 1 run on lotolink-db" in slot.inner_text()
    page.wait_for_timeout(300)  # the message revealed, the focus restored
    before = page.evaluate(
        "() => { scrollBy(0, 116); return [scrollY, document.activeElement.id]; }"
    )
    pages["laptop"].locator(f"#run-step-{step.pk}").focus()
    laptop_before = pages["laptop"].evaluate("() => { scrollBy(0, 63); return scrollY; }")
    assert before[0] > 0 and before[1] == f"run-step-{step.pk}", before
    assert CheckRun.objects.filter(pk=step.pk, step=step).exists()  # equal numbers
    start_worker()  # only now: the result lands on a page that stays put meanwhile
    for page in pages.values():  # the result, drawn by the live stream
        page.wait_for_selector(
            f"#runbook li.step[data-step='{step.key}'] #check-run-{step.pk}.run-succeeded",
            timeout=20000,
        )
        page.wait_for_timeout(300)
    after = pages["phone"].evaluate("() => [scrollY, document.activeElement.id]")
    assert abs(after[0] - before[0]) <= 2 and after[1] == before[1], (before, after)
    assert abs(pages["laptop"].evaluate("() => scrollY") - laptop_before) <= 2
    for page in pages.values():
        assert page.locator(f"#run-step-{step.pk}").count() == 1
        duplicates = page.evaluate(
            "() => { const seen = {}; for (const e of document.querySelectorAll('[id]'))"
            " seen[e.id] = (seen[e.id] || 0) + 1;"
            " return Object.keys(seen).filter(k => seen[k] > 1); }"
        )
        assert not duplicates, duplicates
