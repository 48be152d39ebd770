"""The runbook panel of the incident page: run a diagnostic, run a procedure's
diagnostics in parallel, review and confirm an action, download a run's output."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from incidents.access import (
    can_override_recovery,
    can_run_actions,
    can_work,
    get_incident_for,
)
from incidents.forms import ReasonForm
from incidents.htmx import htmx_error, message_slot, notice
from incidents.models import ActionItem, EventKind, Incident, Status
from incidents.panels import LiveItem, Panel
from incidents.services import IncidentError
from incidents.views.postmortem import item_response

from . import actions, approvals, recovery, services, verification
from .models import (
    ACTIVE_RUN_STATUSES,
    ActionApproval,
    CheckRun,
    RecoveryState,
    Runbook,
    RunbookStep,
    StepKind,
    Target,
)
from .probes.base import ParamChoice


def runbook_context(
    request: HttpRequest, incident: Incident, *, expand: str | None = None, **_: Any
) -> dict[str, Any]:
    """Everything the runbook panel shows, in a fixed number of queries.

    Procedures are expanded (their steps rendered) when they are for the
    incident's category, the initial response, one the responder asked for, or
    one with runs on this incident; the others load when opened."""
    awaiting = approvals.pending(incident)
    runbooks = services.runbooks_for(incident)
    runs = list(incident.check_runs.select_related("requested_by", "step").order_by("-id")[:300])
    latest: dict[int, list[CheckRun]] = {}
    for run in runs:
        kept = latest.setdefault(run.step_id, [])
        if len(kept) < 3:
            kept.append(run)
    found = services.findings(incident, runs)
    evidence = services.evidence_found(incident, runs)
    for run in runs:  # what a later run of the same check no longer finds
        gone = [f for f in found if f.run == run.pk and not f.current]
        run.superseded_keys = [f.key for f in gone]
        run.superseded_by = gone[0].superseded_by if gone else None
    ran = {run.step.runbook_id for run in runs}
    for_category = {book.pk for book in runbooks if incident.category in book.categories}
    asked = {book.pk for book in runbooks if book.key == expand}
    expanded = ran | for_category | asked | {b.pk for b in runbooks if b.section == "1"}
    # Shown open: the incident's category's procedure (the runbook first), and those the
    # responder asked for or ran something from; the initial response when no
    # procedure is for this category.
    shown_open = for_category | asked | ran if for_category else expanded
    act_refusal = action_refusal(request.user, incident)
    steps: dict[int, list[RunbookStep]] = {}
    for step in RunbookStep.objects.filter(runbook_id__in=expanded).order_by("order"):
        steps.setdefault(step.runbook_id, []).append(step)
    return {
        "runbooks": [
            {
                "book": book,
                "steps": _step_rows(steps.get(book.pk, []), latest, evidence, act_refusal)
                if book.pk in expanded
                else None,
                "open": book.pk in shown_open,
                "for_category": book.pk in for_category,
            }
            for book in runbooks
        ],
        "evidence": evidence,
        "superseded": [f for f in found if not f.current],
        "can_run": can_work(request.user, incident),
        "can_act": not act_refusal,
        "act_refusal": act_refusal,
        "output_cap": services.OUTPUT_PAGE_CAP,
        "awaiting_approval": awaiting,
        "can_approve": approvals.can_approve(request.user, incident),
        "own_requests": _own_requests(request.user, awaiting),
    }


# A run that finished this recently is still sent to a stream that has not seen its
# last version (one opened just now); older ones are in the panel the page loaded.
LIVE_WINDOW = timedelta(seconds=10)


def run_items(incident_id: int) -> list[LiveItem]:
    """The incident's live check runs (active, or finished within LIVE_WINDOW), drawn:
    fetched once per change for every open stream of the incident in the process
    (live.Feed.live_updates), whatever their number. The partial depends on the run
    alone, never on the viewer, so it is drawn without a request."""
    since = timezone.now() - LIVE_WINDOW
    runs = (
        CheckRun.objects.filter(incident_id=incident_id)
        .filter(Q(status__in=ACTIVE_RUN_STATUSES) | Q(finished_at__gte=since))
        .select_related("requested_by")
        .order_by("pk")
    )
    context = {"oob": True, "latest": True, "output_cap": services.OUTPUT_PAGE_CAP}
    return [
        (
            ("run", run.pk),
            run.version,
            "run",
            render_to_string("diagnostics/partials/run.html", context | {"run": run}),
        )
        for run in runs
    ]


def run_activity(incident_ids: list[int]) -> dict[int, Hashable]:
    """Per incident, a value that changes whenever one of its runs does (every change
    bumps the run's version): what the live timeline's one poll looks at without Redis."""
    rows = (
        CheckRun.objects.filter(incident_id__in=incident_ids)
        .values("incident_id")
        .annotate(runs=Count("id"), versions=Sum("version"))
    )
    return {row["incident_id"]: (row["runs"], row["versions"]) for row in rows}


def _own_requests(user: Any, awaiting: list[ActionApproval]) -> frozenset[int]:
    """The pending approval requests this viewer made (they may not decide them)."""
    return frozenset(a.pk for a in awaiting if a.requested_by_id == user.pk)


def runbook_viewer_key(user: Any, incident: Incident) -> tuple[bool, frozenset[int]]:
    """What makes the runbook panel differ between viewers of one class: whether they
    may approve, and which pending requests are their own."""
    return approvals.can_approve(user, incident), _own_requests(user, approvals.pending(incident))


# The runbook panel of the incident page (registered in DiagnosticsConfig.ready).
RUNBOOK_PANEL = Panel(
    name="runbook",
    template="diagnostics/partials/runbook.html",
    context=runbook_context,
    refresh_on=frozenset({"check_run", "check_result", "action"}),
    live_items=run_items,
    poll=run_activity,
    viewer_key=runbook_viewer_key,
    place="top",
)


def action_refusal(user: Any, incident: Incident) -> str:
    """Why this viewer cannot run the runbook's actions on this incident ("" when
    they can): shown on the action steps instead of a missing button."""
    if can_run_actions(user, incident):
        return ""
    if not can_work(user, incident):
        return (
            "You may look at this incident but may not work it: ask an incident "
            "commander to run this action."
        )
    return (
        "You may not run resolution actions: that needs the “run actions” permission "
        "(incidents.run_actions). Ask an incident commander to run it, or an admin to "
        "grant it."
    )


def _step_rows(
    steps: list[RunbookStep],
    latest: dict[int, list[CheckRun]],
    evidence: dict[str, Any],
    act_refusal: str = "",
) -> list[dict[str, Any]]:
    rows = []
    for step in steps:
        because = sorted(set(step.recommended_by) & set(evidence))
        recommended = step.kind == StepKind.ACTION and bool(because)
        rows.append(
            {
                "step": step,
                "runs": latest.get(step.pk, []),
                "recommended": recommended,
                "because": because,
                "found": [{"key": key, **evidence[key]} for key in because],
                "refusal": act_refusal if step.kind == StepKind.ACTION else "",
            }
        )
    return rows


@require_GET
def procedure(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    """One procedure's steps, loaded when a collapsed procedure is opened."""
    incident = get_incident_for(request.user, pk)
    get_object_or_404(Runbook, key=key)
    context = {"incident": incident} | runbook_context(request, incident, expand=key)
    entry = next(e for e in context["runbooks"] if e["book"].key == key)
    return render(request, "diagnostics/partials/steps.html", context | {"entry": entry})


def _panel(
    request: HttpRequest, incident: Incident, note: dict[str, Any] | None = None
) -> HttpResponse:
    """The runbook panel, with `note` drawn in the message slot of the control pressed."""
    context = {"incident": incident, "notice": note} | runbook_context(request, incident)
    response = render(request, "diagnostics/partials/runbook.html", context)
    if note and note.get("text") and not note.get("slot"):
        # The control named no slot of its own: the page's flash area says it (out of band).
        flash = render_to_string("partials/flash_oob.html", {"note": note}, request=request)
        response.content += flash.encode()
    return response


def _queued(
    request: HttpRequest,
    incident: Incident,
    runs: list[CheckRun],
    skipped: list[str] | None = None,
) -> HttpResponse:
    """The runbook panel after queueing, saying so next to the button pressed: what
    was queued, what "Run all" skipped and why, and if the broker could not be
    reached (the runs are saved and sent again by the reaper)."""
    unsent = next((r.send_error for r in runs if getattr(r, "send_error", "")), "")
    if not request.htmx:
        if unsent:
            messages.warning(request, unsent)
        if skipped:
            messages.warning(request, "Skipped: " + "; ".join(skipped))
        return redirect(incident)
    targets = sorted({r.target_name for r in runs})
    text = f"Queued {len(runs)} run{'s' if len(runs) != 1 else ''} on {', '.join(targets)}."
    if skipped:
        text += f" Skipped {len(skipped)}:"
    if unsent:
        text = f"{unsent} {text}"
    level = "warning" if unsent or skipped else "success"
    return _panel(request, incident, notice(request, text, level=level, items=skipped))


def _skipped(incident: Incident, runs: list[CheckRun]) -> list[str]:
    """The steps "Run all" skipped, with why (the batch's timeline event says so)."""
    batch = runs[0].batch if runs else ""
    event = (
        incident.timeline.filter(kind=EventKind.CHECK_RUN, data__batch=batch).first()
        if batch
        else None
    )
    return list(event.data.get("skipped", [])) if event else []


def _refuse(request: HttpRequest, incident: Incident, error: str) -> HttpResponse:
    if request.htmx:
        return htmx_error(request, error)
    messages.error(request, error)
    return redirect(incident)


@require_POST
def run_step(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    step = get_object_or_404(RunbookStep, key=key)
    try:
        runs = services.request_check(incident, step, actor=request.user)
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    return _queued(request, incident, runs)


@require_POST
def run_all(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    runbook = get_object_or_404(Runbook, key=key)
    try:
        runs = services.run_all_diagnostics(incident, runbook, actor=request.user)
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    return _queued(request, incident, runs, _skipped(incident, runs))


class ActionForm(forms.Form):
    """What a responder may choose for an action: the target, and what the probe
    declares (`Probe.choices`): a value picked from what a diagnostic found (never
    typed free-hand), a bounded number, or text the probe then validates."""

    target = forms.ModelChoiceField(queryset=Target.objects.none(), empty_label=None)

    def __init__(self, *args: Any, step: RunbookStep, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step = step
        self.fields["target"].queryset = Target.objects.filter(kind=step.target_kind, active=True)
        self.chosen = actions.choices(step, incident)
        for choice in self.chosen:
            self.fields[choice.name] = _field(choice)

    def chosen_params(self) -> dict[str, Any]:
        return {c.name: self.cleaned_data[c.name] for c in self.chosen}


def _field(choice: ParamChoice) -> forms.Field:
    common = {"label": choice.label, "help_text": choice.help}
    if choice.options is not None:
        kinds = {type(value) for value, _ in choice.options}
        coerce = int if kinds == {int} else str
        return forms.TypedChoiceField(
            choices=[(str(v), label) for v, label in choice.options], coerce=coerce, **common
        )
    if choice.text:
        return forms.CharField(max_length=2000, initial=choice.initial, **common)
    return forms.IntegerField(
        min_value=choice.minimum, max_value=choice.maximum, initial=choice.initial, **common
    )


@require_http_methods(["GET", "POST"])
def action(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    """Review (GET, then POST stage=review shows the exact plan) and confirm
    (POST stage=confirm with the signed plan) one resolution action."""
    incident = get_incident_for(request.user, pk, work=True)
    step = get_object_or_404(RunbookStep, key=key, kind=StepKind.ACTION)
    if refusal := action_refusal(request.user, incident):
        return _refuse(request, incident, refusal)
    if not step.available:
        return _refuse(request, incident, f"{step.key} is not available yet.")
    if request.POST.get("stage") == "confirm":
        token = request.POST.get("token", "")
        try:
            done = approvals.confirm_or_request(incident, step, token, actor=request.user)
        except services.CheckError as exc:
            return _refuse(request, incident, str(exc))
        if isinstance(done, ActionApproval):
            text = f"Request #{done.pk} awaits another person's approval: {done.plan}"
        else:
            text = f"Confirmed and queued as run #{done.pk}: {done.plan}"
        if not request.htmx:
            messages.success(request, text)
            return redirect(incident)
        return _panel(request, incident, notice(request, text, level="success"))
    context: dict[str, Any] = {
        "incident": incident,
        "step": step,
        "needs_approval": approvals.required(incident, step),
        # Where the next answer's message goes: next to the Review button that opened it.
        "msg_slot": message_slot(request) or f"step-msg-{step.pk}",
    }
    form = ActionForm(request.POST or None, step=step, incident=incident)
    if request.method == "POST" and form.is_valid():
        target = form.cleaned_data["target"]
        try:
            review = actions.review(incident, step, target, form.chosen_params())
        except services.CheckError as exc:
            form.add_error(None, str(exc))
        else:
            context |= {"plan": review.plan, "token": review.token, "target": target}
    context["form"] = form
    template = "diagnostics/partials/action.html"
    status = 422 if form.errors else 200
    if request.htmx:
        return render(request, template, context, status=status)
    return render(request, "diagnostics/action_page.html", context, status=status)


@require_POST
def decide_approval(request: HttpRequest, pk: int, approval_pk: int, decision: str) -> HttpResponse:
    """Approve (queue exactly the requested plan) or reject a request; the
    permission and "not your own request" are checked by `approvals`."""
    incident = get_incident_for(request.user, pk)
    approval = get_object_or_404(ActionApproval, pk=approval_pk, incident=incident)
    try:
        if decision == "approve":
            approvals.approve(approval, actor=request.user)
        else:
            approvals.reject(approval, actor=request.user, reason=request.POST.get("reason", ""))
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    text = f"Request #{approval.pk} {'approved: queued' if decision == 'approve' else 'rejected'}."
    if not request.htmx:
        messages.success(request, text)
        return redirect(incident)
    return _panel(request, incident, notice(request, text, level="success"))


@require_GET
def run_output(request: HttpRequest, pk: int, run_pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    run = CheckRun.objects.filter(pk=run_pk, incident=incident).first()
    if run is None:
        raise Http404("No such run")
    response = HttpResponse(run.output, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="incident-{incident.pk}-{run.step.key}-run-{run.pk}.txt"'
    )
    return response


@require_POST
def action_item_verify(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """Re-run an action item's check: the item is verified only if it passes."""
    incident = get_incident_for(request.user, pk, work=True)
    item = get_object_or_404(ActionItem, pk=item_pk, incident=incident)
    error = ""
    try:
        verification.verify_action_item(item, actor=request.user)
    except IncidentError as exc:
        error = str(exc)
    return item_response(request, incident, item, error)


# --- verified recovery ----------------------------------------------------------------


def recovery_context(request: HttpRequest, incident: Incident, **_: Any) -> dict[str, Any]:
    """The recovery card: the procedure's recovery checks, the latest verification
    (its current round's runs, or the evidence that failed), the buttons."""
    latest = recovery.latest_verification(incident)
    runs: list[CheckRun] = []
    if latest is not None and latest.state == RecoveryState.VERIFYING:
        runs = list(
            incident.check_runs.filter(batch=f"{recovery.BATCH_PREFIX}{latest.pk}-{latest.round}")
            .select_related("step")
            .order_by("id")
        )
    may_resolve = Status.RESOLVED in incident.allowed_transitions()
    return {
        "recovery": latest,
        "recovery_checks": recovery.recovery_checks_for(incident),
        "recovery_runs": runs,
        "recovery_failures_text": recovery.describe_failures(latest.failures)
        if latest is not None and latest.failures
        else "",
        "can_resolve": may_resolve and can_work(request.user, incident),
        "can_override": may_resolve and can_override_recovery(request.user, incident),
    }


RECOVERY_PANEL = Panel(
    name="recovery",
    template="diagnostics/partials/recovery.html",
    context=recovery_context,
    refresh_on=frozenset({"recovery", "status", "reopened", "check_result", "acknowledged"}),
    viewer_key=lambda user, incident: can_override_recovery(user, incident),
)


@require_POST
def recovery_override(request: HttpRequest, pk: int) -> HttpResponse:
    """Resolve without verified recovery: a commander's call, with a reason."""
    incident = get_incident_for(request.user, pk, work=True)
    if not can_override_recovery(request.user, incident):
        return _refuse(
            request,
            incident,
            "You may not resolve without verified recovery: only an incident commander may.",
        )
    form = ReasonForm(request.POST)
    if not form.is_valid():
        if not request.POST.get("reason", "").strip():
            return _refuse(
                request, incident, "Say why the incident is resolved without verified recovery."
            )
        return _refuse(request, incident, "Reason: " + " ".join(form.errors.get("reason", [])))
    try:
        recovery.override_resolution(
            incident, actor=request.user, reason=form.cleaned_data["reason"]
        )
    except IncidentError as exc:
        return _refuse(request, incident, str(exc))
    if not request.htmx:
        return redirect(incident)
    incident.refresh_from_db()
    context = {"incident": incident} | recovery_context(request, incident)
    return render(request, "diagnostics/partials/recovery.html", context)
