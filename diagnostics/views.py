"""The runbook panel of the incident page: run a diagnostic, run a procedure's
diagnostics in parallel, review and confirm an action, download a run's output."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from incidents.access import can_run_actions, can_work, get_incident_for
from incidents.htmx import htmx_error
from incidents.models import Incident

from . import services
from .models import CheckRun, Runbook, RunbookStep, StepKind, Target

ACTION_SIGNING_SALT = "lotoops.action-confirmation"
CONFIRMATION_MAX_AGE = 600  # seconds between "review" and "confirm"


def runbook_context(
    request: HttpRequest, incident: Incident, *, expand: str | None = None
) -> dict[str, Any]:
    """Everything the runbook panel shows, in a fixed number of queries.

    Procedures are expanded (their steps rendered) when they are for the
    incident's category, the initial response, one the responder asked for, or
    one with runs on this incident; the others load when opened."""
    runbooks = services.runbooks_for(incident)
    runs = list(incident.check_runs.select_related("requested_by", "step").order_by("-id")[:300])
    latest: dict[int, list[CheckRun]] = {}
    for run in runs:
        kept = latest.setdefault(run.step_id, [])
        if len(kept) < 3:
            kept.append(run)
    evidence = services.evidence_found(incident, runs)
    expanded = {run.step.runbook_id for run in runs} | {
        book.pk
        for book in runbooks
        if incident.category in book.categories or book.section == "1" or book.key == expand
    }
    steps: dict[int, list[RunbookStep]] = {}
    for step in RunbookStep.objects.filter(runbook_id__in=expanded).order_by("order"):
        steps.setdefault(step.runbook_id, []).append(step)
    return {
        "runbooks": [
            {
                "book": book,
                "steps": _step_rows(steps.get(book.pk, []), latest, evidence)
                if book.pk in expanded
                else None,
            }
            for book in runbooks
        ],
        "evidence": evidence,
        "can_run": can_work(request.user, incident),
        "can_act": can_run_actions(request.user, incident),
        "output_cap": services.OUTPUT_PAGE_CAP,
    }


def _step_rows(
    steps: list[RunbookStep], latest: dict[int, list[CheckRun]], evidence: dict[str, Any]
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


def _panel(request: HttpRequest, incident: Incident) -> HttpResponse:
    context = {"incident": incident} | runbook_context(request, incident)
    return render(request, "diagnostics/partials/runbook.html", context)


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
        services.request_check(incident, step, actor=request.user)
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    return _panel(request, incident) if request.htmx else redirect(incident)


@require_POST
def run_all(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    runbook = get_object_or_404(Runbook, key=key)
    try:
        services.run_all_diagnostics(incident, runbook, actor=request.user)
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    return _panel(request, incident) if request.htmx else redirect(incident)


class ActionForm(forms.Form):
    """What a responder may choose for an action: the target, and for some
    actions one value picked from what a diagnostic found (never typed free-hand)."""

    target = forms.ModelChoiceField(queryset=Target.objects.none(), empty_label=None)

    def __init__(self, *args: Any, step: RunbookStep, incident: Incident, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step = step
        self.fields["target"].queryset = Target.objects.filter(kind=step.target_kind, active=True)
        if step.probe == "postgres.terminate_query":
            found = services.evidence_found(incident).get("long_running_queries", {})
            queries = found.get("details", {}).get("queries", [])
            choices = [
                (
                    str(q["pid"]),
                    f"pid {q['pid']} ({int(q.get('seconds', 0))} s): "
                    f"{str(q.get('query', ''))[:80]}",
                )
                for q in queries
            ]
            self.fields["pid"] = forms.TypedChoiceField(
                choices=choices, coerce=int, help_text="From the latest db.slow_queries result"
            )
        if "replicas" in step.params:
            self.fields["replicas"] = forms.IntegerField(
                min_value=1, max_value=50, initial=step.params["replicas"]
            )

    def params(self) -> dict[str, Any]:
        chosen = {k: v for k, v in self.cleaned_data.items() if k != "target"}
        return {**self.step.params, **chosen}


@require_http_methods(["GET", "POST"])
def action(request: HttpRequest, pk: int, key: str) -> HttpResponse:
    """Review (GET, then POST stage=review shows the exact plan) and confirm
    (POST stage=confirm with the signed plan) one resolution action."""
    incident = get_incident_for(request.user, pk, work=True)
    step = get_object_or_404(RunbookStep, key=key, kind=StepKind.ACTION)
    if not can_run_actions(request.user, incident):
        return _refuse(request, incident, "You may not run actions on this incident.")
    if not step.available:
        return _refuse(request, incident, f"{step.key} is not available yet.")
    context: dict[str, Any] = {"incident": incident, "step": step}
    if request.POST.get("stage") == "confirm":
        return _confirm(request, incident, step)
    form = ActionForm(request.POST or None, step=step, incident=incident)
    if request.method == "POST" and form.is_valid():
        target, params = form.cleaned_data["target"], form.params()
        try:
            plan = services.plan_action(step, target, params)
        except services.CheckError as exc:
            form.add_error(None, str(exc))
        else:
            token = signing.dumps(
                {
                    "target": target.pk,
                    "params": params,
                    "plan": plan,
                    "incident": incident.pk,
                    "step": step.key,
                },
                salt=ACTION_SIGNING_SALT,
            )
            context |= {"plan": plan, "token": token, "target": target}
    context["form"] = form
    template = "diagnostics/partials/action.html"
    status = 422 if form.errors else 200
    if request.htmx:
        return render(request, template, context, status=status)
    return render(request, "diagnostics/action_page.html", context, status=status)


def _confirm(request: HttpRequest, incident: Incident, step: RunbookStep) -> HttpResponse:
    try:
        data = signing.loads(
            request.POST.get("token", ""), salt=ACTION_SIGNING_SALT, max_age=CONFIRMATION_MAX_AGE
        )
    except signing.SignatureExpired:
        return _refuse(request, incident, "That confirmation expired: review the action again.")
    except signing.BadSignature:
        return _refuse(
            request, incident, "That confirmation is not valid: review the action again."
        )
    if data["incident"] != incident.pk or data["step"] != step.key:
        return _refuse(request, incident, "That confirmation is for another action.")
    target = get_object_or_404(Target, pk=data["target"], active=True)
    try:
        services.run_action(
            incident,
            step,
            actor=request.user,
            target=target,
            params=data["params"],
            plan=data["plan"],
        )
    except services.CheckError as exc:
        return _refuse(request, incident, str(exc))
    return _panel(request, incident) if request.htmx else redirect(incident)


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
