"""Pages and actions of the incident loop. Small functions: fetch through the
access helper, validate, call a service, render (HTMX) or redirect (plain POST)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.forms import Form
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnostics.views import runbook_context

from . import forms, health, live, paging, services
from .access import can_work, get_incident_for, visible_incidents
from .htmx import htmx_error
from .models import (
    OPEN_STATUSES,
    ChecklistItem,
    ChecklistPhase,
    ChecklistTemplate,
    Incident,
    Severity,
    TimelineEvent,
    channel_name_for,
)
from .views_postincident import overdue_followups

# Events that change what the incident header shows (status, SLA, severity, commander).
HEADER_KINDS = {"declared", "acknowledged", "status", "reopened", "severity", "commander"}
# Events that change the "Who's told" card.
TOLD_KINDS = {"escalation", "notification", "acknowledged"}


# What a dashboard row shows: loading only these keeps 200 rows cheap.
DASHBOARD_FIELDS = (
    "title",
    "category",
    "status",
    "restricted",
    "declared_at",
    "response_deadline",
    "acknowledged_at",
    "resolved_at",
    "severity__key",
    "severity__order",
    "commander__username",
)


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    form = forms.DashboardFilterForm(request.GET or None)
    incidents = (
        visible_incidents(request.user)
        .select_related("severity", "commander")
        .only(*DASHBOARD_FIELDS)
    )
    filters: dict[str, Any] = {}
    if form.is_valid():
        filters = {k: v for k, v in form.cleaned_data.items() if v}
    open_incidents = _filter_open(incidents, filters)[:200]
    context = {
        "form": form,
        "on_call": on_call_context(),
        "open_incidents": open_incidents,
        # resolved_at is set exactly while an incident is resolved or closed: this
        # walks the resolved_at index instead of sorting every closed incident.
        "recent_closed": incidents.filter(resolved_at__isnull=False).order_by("-resolved_at")[:10],
        "query": request.GET.urlencode(),
    }
    if request.htmx:
        return render(request, "incidents/dashboard.html#incident-list", context)
    context["followups"] = overdue_followups(request.user)
    return render(request, "incidents/dashboard.html", context)


def _filter_open(incidents: QuerySet[Incident], filters: dict[str, Any]) -> QuerySet[Incident]:
    status = filters.pop("status", None)
    incidents = (
        incidents.filter(status=status) if status else incidents.filter(status__in=OPEN_STATUSES)
    )
    return incidents.filter(**filters).order_by("severity__order", "declared_at")


@require_http_methods(["GET", "POST"])
def declare(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("incidents.add_incident"):
        return render(request, "403.html", {"reason": "You may not declare incidents."}, status=403)
    form = forms.DeclareForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        incident = services.declare_incident(actor=request.user, **data)
        messages.success(
            request, f"Incident #{incident.pk} declared. Channel: {incident.channel_name}"
        )
        return redirect(incident)
    context = {
        "form": form,
        "checklists": ChecklistTemplate.objects.filter(
            phase__in=services.DECLARE_PHASES
        ).prefetch_related("items"),
    }
    return render(request, "incidents/declare.html", context, status=422 if form.errors else 200)


@require_GET
def channel_preview(request: HttpRequest) -> HttpResponse:
    name = channel_name_for(request.GET.get("title", "")[:200], timezone.now())
    return render(request, "incidents/declare.html#channel", {"channel_name": name})


@require_GET
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    events = list(
        incident.timeline.select_related("actor").order_by("-id")[: settings.TIMELINE_PAGE_SIZE]
    )
    context = (
        _detail_context(request, incident)
        | runbook_context(request, incident, expand=request.GET.get("procedure"))
        | {
            "events": events,
            "event_html": rendered_events(events),
            "last_event_id": events[0].pk if events else 0,
            "earlier_before": events[-1].pk if len(events) == settings.TIMELINE_PAGE_SIZE else None,
            "severities": Severity.objects.all(),
            "users": forms.CommanderForm().fields["commander"].queryset,
        }
        | whos_told_context(incident)
    )
    return render(request, "incidents/detail.html", context)


def rendered_events(events: list[TimelineEvent]) -> list[str]:
    """Each event's HTML. Events never change (append-only), so their rendering is
    cached by id: a long timeline costs one cache read, not a template per event."""
    # The id alone is not enough: a database restored or recreated under a cache that
    # lives on (Redis) reuses ids; the incident and the creation time make it unique.
    keys = {
        event.pk: f"timeline-event:v2:{event.pk}:{event.incident_id}:{event.created_at.timestamp()}"
        for event in events
    }
    cached = cache.get_many(list(keys.values()))
    fresh = {}
    html = []
    for event in events:
        piece = cached.get(keys[event.pk])
        if piece is None:
            piece = render_to_string("incidents/partials/timeline_event.html", {"event": event})
            fresh[keys[event.pk]] = piece
        html.append(mark_safe(piece))  # noqa: S308  (our own rendered, escaped template)
    if fresh:
        cache.set_many(fresh, timeout=24 * 3600)
    return html


def _detail_context(request: HttpRequest, incident: Incident) -> dict[str, Any]:
    items = list(incident.checklist.select_related("done_by"))
    phases = [
        (label, [item for item in items if item.phase == phase])
        for phase, label in ChecklistPhase.choices
    ]
    return {
        "incident": incident,
        "can_work": can_work(request.user, incident),
        "checklist_phases": [(label, group) for label, group in phases if group],
    }


@require_GET
def timeline_page(request: HttpRequest, pk: int) -> HttpResponse:
    """Older events, a page at a time (the incident page shows the newest first)."""
    incident = get_incident_for(request.user, pk)
    try:
        before = int(request.GET["before"])
    except (KeyError, ValueError):
        return HttpResponseBadRequest("before must be an event id")
    size = settings.TIMELINE_PAGE_SIZE
    events = list(
        incident.timeline.filter(pk__lt=before).select_related("actor").order_by("-id")[:size]
    )
    context = {
        "incident": incident,
        "events": events,
        "event_html": rendered_events(events),
        "earlier_before": events[-1].pk if len(events) == size else None,
    }
    return render(request, "incidents/partials/timeline_page.html", context)


@require_GET
async def stream(request: HttpRequest, pk: int) -> HttpResponse:
    """The incident's live timeline (SSE). Resumes after the last id the page saw."""
    from asgiref.sync import sync_to_async

    user = await request.auser()
    try:
        incident = await sync_to_async(get_incident_for)(user, pk)
    except Http404:
        # Answered here, not by Django's 404 page: that page renders in a thread
        # outside this request's, whose DB connection would outlive the request.
        return HttpResponseNotFound("No such incident")
    try:
        after = max(
            int(request.headers.get("Last-Event-ID") or 0), int(request.GET.get("after") or 0)
        )
    except ValueError:
        return HttpResponseBadRequest("Last-Event-ID and after must be event ids")

    response = StreamingHttpResponse(
        live.timeline_stream(incident.pk, after, StreamRenderer(request, incident.pk)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class StreamRenderer:
    """Renders what changed since the last call: new timeline events (with their id,
    plus out-of-band header, checklist and runbook updates where an event changed
    them) and the live output of check runs (id-less "run" messages)."""

    CHECK_KINDS = {"check_run", "check_result", "action"}

    def __init__(self, request: HttpRequest, incident_id: int) -> None:
        self.request = request
        self.incident_id = incident_id
        self.run_versions: dict[int, int] = {}
        self.checked_at = timezone.now() - timedelta(seconds=5)

    def __call__(self, after: int, limit: int = 200) -> tuple[list[live.Message], int]:
        events = list(
            TimelineEvent.objects.filter(incident_id=self.incident_id, pk__gt=after)
            .select_related("actor")
            .order_by("id")[:limit]
        )
        out: list[live.Message] = []
        incident = None
        if events:
            incident = Incident.objects.select_related("severity", "commander").get(
                pk=self.incident_id
            )
            out += self._events(incident, events)
            after = events[-1].pk
        out += self._runs()
        return out, after

    def _events(self, incident: Incident, events: list[TimelineEvent]) -> list[live.Message]:
        kinds = {e.kind for e in events}
        items = _checklist_items(events)
        out = []
        for index, event in enumerate(events):
            context: dict[str, Any] = {"event": event, "incident": incident}
            if index == len(events) - 1:
                if kinds & HEADER_KINDS:
                    context |= {
                        "oob_header": True,
                        "can_work": can_work(self.request.user, incident),
                    }
                if kinds & self.CHECK_KINDS:
                    context |= {"oob_runbook": True} | runbook_context(self.request, incident)
                if kinds & TOLD_KINDS:
                    context |= {"oob_told": True} | whos_told_context(incident)
            if event.kind == "checklist" and (item := items.get(event.data.get("item"))):
                context["oob_item"] = item
            html = render_to_string("incidents/partials/timeline_event.html", context, self.request)
            out.append((event.pk, "timeline", html))
        return out

    def _runs(self) -> list[live.Message]:
        from diagnostics.models import ACTIVE_RUN_STATUSES, CheckRun
        from diagnostics.services import OUTPUT_PAGE_CAP

        now = timezone.now()
        runs = CheckRun.objects.filter(incident_id=self.incident_id).filter(
            Q(status__in=ACTIVE_RUN_STATUSES) | Q(finished_at__gte=self.checked_at)
        )
        self.checked_at = now - timedelta(seconds=1)
        changed = [
            r
            for r in runs.select_related("requested_by")
            if self.run_versions.get(r.pk) != r.version
        ]
        out = []
        for run in changed:
            self.run_versions[run.pk] = run.version
            context = {"run": run, "oob": True, "latest": True, "output_cap": OUTPUT_PAGE_CAP}
            html = render_to_string("diagnostics/partials/run.html", context, self.request)
            out.append((None, "run", html))
        return out


def _checklist_items(events: list[TimelineEvent]) -> dict[int, ChecklistItem]:
    """The checklist items ticked in these events, in one query (a replay after a
    long disconnect can hold many)."""
    ids = [e.data.get("item") for e in events if e.kind == "checklist" and e.data.get("item")]
    if not ids:
        return {}
    return ChecklistItem.objects.select_related("done_by").in_bulk(ids)


# --- actions -----------------------------------------------------------------


def _act(
    request: HttpRequest,
    pk: int,
    form_class: type[Form],
    run: Callable[[Incident, dict[str, Any]], object],
) -> HttpResponse:
    """Validate the form, call the service, answer HTMX with the fresh header
    (the timeline event arrives over the stream) and plain POSTs with a redirect."""
    incident = get_incident_for(request.user, pk, work=True)
    form = form_class(request.POST)
    error = None
    if form.is_valid():
        try:
            run(incident, form.cleaned_data)
        except services.IncidentError as exc:
            error = str(exc)
    else:
        error = _form_error(form)
    if request.htmx:
        if error:
            return htmx_error(request, error)
        incident.refresh_from_db()
        context = _detail_context(request, incident)
        return render(request, "incidents/partials/header.html", context)
    if error:
        messages.error(request, error)
    return redirect(incident)


def _form_error(form: Form) -> str:
    parts = []
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = (field.label or name.replace("_", " ").capitalize()) if field else ""
        parts.append(f"{label}: {' '.join(errors)}" if label else " ".join(errors))
    return "; ".join(parts)


@require_POST
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request, pk, Form, lambda i, d: services.acknowledge_incident(i, actor=request.user)
    )


@require_POST
def transition(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.TransitionForm,
        lambda i, d: services.transition_incident(
            i, d["status"], actor=request.user, note=d["note"]
        ),
    )


@require_POST
def reopen(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.ReasonForm,
        lambda i, d: services.reopen_incident(i, actor=request.user, reason=d["reason"]),
    )


@require_POST
def change_severity(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.SeverityForm,
        lambda i, d: services.change_severity(
            i, d["severity"], actor=request.user, reason=d["reason"]
        ),
    )


@require_POST
def assign_commander(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.CommanderForm,
        lambda i, d: services.assign_commander(i, d["commander"], actor=request.user),
    )


@require_POST
def add_note(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.TextForm,
        lambda i, d: services.add_note(i, d["text"], actor=request.user),
    )


@require_POST
def status_update(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.TextForm,
        lambda i, d: services.post_status_update(i, d["text"], actor=request.user),
    )


@require_POST
def checklist_item(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    item = get_object_or_404(ChecklistItem, pk=item_pk, incident=incident)
    form = forms.ChecklistForm(request.POST)
    form.is_valid()  # a checkbox: absent means unticked, nothing else to get wrong
    services.set_checklist_item(item, done=form.cleaned_data.get("done", False), actor=request.user)
    if request.htmx:
        context = {"item": item, "incident": incident, "can_work": True}
        return render(request, "incidents/partials/checklist_item.html", context)
    return redirect(incident)


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    started = time.perf_counter()
    checks = health.run_checks()
    status = health.overall_status(checks)
    body = {
        "status": status,
        "checks": checks,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return JsonResponse(body, status=503 if status == "error" else 200)


# --- escalation: on call, who's told, flags, acknowledge links -----------------------


def on_call_context() -> dict[str, Any]:
    now_member, next_member, now_shift, next_shift = paging.on_call()
    return {
        "now": now_member,
        "next": next_member,
        "now_shift": now_shift,
        "next_shift": next_shift,
    }


def whos_told_context(incident: Incident) -> dict[str, Any]:
    notifications = incident.notifications.order_by("-created_at", "-pk")[:100]
    return {
        "on_call": on_call_context(),
        "notifications": notifications,
        "flag_choices": forms.FlagsForm.base_fields["flags"].choices,
    }


@require_GET
def whos_told(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    context = {"incident": incident, "can_work": can_work(request.user, incident)}
    context |= whos_told_context(incident)
    return render(request, "incidents/partials/whos_told.html", context)


@require_POST
def set_flags(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        forms.FlagsForm,
        lambda i, d: services.set_incident_flags(i, d["flags"], actor=request.user),
    )


@require_http_methods(["GET", "POST"])
def ack_link(request: HttpRequest, token: str) -> HttpResponse:
    """The acknowledge link of a notification: GET shows what it acknowledges, POST
    acknowledges as the logged-in user. Forged or expired: a clear page, no change."""
    try:
        incident_id, _ = paging.read_ack_token(token)
    except signing.SignatureExpired:
        if (pk := paging.token_incident(token)) is not None:
            paging.record_expired_link(pk, request.user)
        context = {"problem": "This acknowledge link has expired. Open the incident instead."}
        return render(request, "incidents/ack_link.html", context, status=410)
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        context = {"problem": "This acknowledge link is not valid: nothing was acknowledged."}
        return render(request, "incidents/ack_link.html", context, status=400)
    incident = get_incident_for(request.user, incident_id, work=True)
    if request.method == "POST":
        try:
            services.acknowledge_incident(incident, actor=request.user)
            messages.success(request, f"You acknowledged incident #{incident.pk}.")
        except services.IncidentError as exc:
            messages.info(request, str(exc))
        return redirect(incident)
    return render(request, "incidents/ack_link.html", {"incident": incident, "token": token})
