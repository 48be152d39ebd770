"""The incident page and its actions. Small functions: fetch through the access
helper, validate, call a service, render (HTMX) or redirect (plain POST)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.forms import Form
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
)
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from .. import forms, panels, services
from ..access import can_download_evidence, can_verify_evidence, can_work, get_incident_for
from ..htmx import htmx_error
from ..models import (
    ChecklistItem,
    ChecklistPhase,
    Incident,
    RegulatoryClock,
    Severity,
    TimelineEvent,
)
from ..paging import reach, regulatory
from ..postincident import milestones
from .dashboard import on_call_context

log = logging.getLogger(__name__)

# Shared HTML (cached event HTML, the stream's) is drawn with this in place of the
# CSRF token; each page puts its own.
CSRF_PLACEHOLDER = "__lotoops_csrf_token__"


@require_GET
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    size = settings.TIMELINE_PAGE_SIZE
    events = list(incident.timeline.select_related("actor").order_by("-seq")[:size])
    context = (
        _detail_context(request, incident)
        | panels.page_context(request, incident, expand=request.GET.get("procedure"))
        | {
            "events": events,
            "event_html": events_for(request, incident, events),
            "last_event_id": events[0].seq if events else 0,
            "earlier_before": events[-1].seq if len(events) == size else None,
        }
        | whos_told_context(incident)
    )
    return render(request, "incidents/detail.html", context)


def events_for(request: HttpRequest, incident: Incident, events: list[TimelineEvent]) -> list[str]:
    """The events' HTML for this viewer: with the milestone controls if they may work
    the incident, and this page's CSRF token in them."""
    token = get_token(request)
    html = rendered_events(events, can_work=can_work(request.user, incident))
    return [mark_safe(piece.replace(CSRF_PLACEHOLDER, token)) for piece in html]  # noqa: S308


def rendered_events(events: list[TimelineEvent], *, can_work: bool = False) -> list[str]:
    """Each event's HTML. Events never change (append-only), so their rendering is
    cached by id (and by whether the viewer gets the controls; the CSRF token is a
    placeholder): a long timeline costs one cache read, not a template per event."""
    # v6: the milestone controls for viewers who may work the incident; the event's
    # seq and a check result's outcome; its time in the viewer's zone (part of the key).
    # The id alone is not enough: a database restored or recreated under a cache that
    # lives on (Redis) reuses ids; the incident and the creation time make it unique.
    zone = timezone.get_current_timezone_name()
    keys = {
        event.pk: (
            f"timeline-event:v6:{int(can_work)}:{event.pk}:{event.incident_id}:"
            f"{event.created_at.timestamp()}:{zone}"
        )
        for event in events
    }
    try:
        cached = cache.get_many(list(keys.values()))
    except Exception as exc:  # Redis down: render every event, the page still answers
        log.warning("event cache unavailable: %s", type(exc).__name__)
        cached, keys = {}, {}
    fresh = {}
    html = []
    for event in events:
        piece = cached.get(keys.get(event.pk, ""))
        if piece is None:
            context = {"event": event, "can_work": can_work, "csrf_token": CSRF_PLACEHOLDER}
            piece = render_to_string("incidents/partials/timeline_event.html", context)
            if keys:
                fresh[keys[event.pk]] = piece
        html.append(mark_safe(piece))  # noqa: S308  (our own rendered, escaped template)
    if fresh:
        with contextlib.suppress(Exception):  # a cache that is down only costs renders
            cache.set_many(fresh, timeout=24 * 3600)
    return html


def _detail_context(request: HttpRequest, incident: Incident) -> dict[str, Any]:
    return {
        "incident": incident,
        "can_work": can_work(request.user, incident),
        "can_download_evidence": can_download_evidence(request.user, incident),
        "can_verify_evidence": can_verify_evidence(request.user, incident),
    } | status_panels_context(incident)


def status_panels_context(incident: Incident) -> dict[str, Any]:
    """What the panels that follow the incident's status show: the checklists (the
    post-incident ones appear on resolution), the post-mortem card, the severity and
    commander forms. The live stream redraws them after a status, severity or
    commander event."""
    items = list(incident.checklist.select_related("done_by"))
    phases = [
        (label, [item for item in items if item.phase == phase])
        for phase, label in ChecklistPhase.choices
    ]
    return {
        "checklist_phases": [(label, group) for label, group in phases if group],
        "severities": Severity.objects.all(),
        "users": forms.CommanderForm().fields["commander"].queryset,
    }


@require_GET
def timeline_page(request: HttpRequest, pk: int) -> HttpResponse:
    """Older events, a page at a time (the incident page shows the newest first)."""
    incident = get_incident_for(request.user, pk)
    try:
        before = int(request.GET["before"])
    except (KeyError, ValueError):
        return HttpResponseBadRequest("before must be an event sequence number")
    size = settings.TIMELINE_PAGE_SIZE
    events = list(
        incident.timeline.filter(seq__lt=before).select_related("actor").order_by("-seq")[:size]
    )
    context = {
        "incident": incident,
        "events": events,
        "event_html": events_for(request, incident, events),
        "earlier_before": events[-1].seq if len(events) == size else None,
    }
    return render(request, "incidents/partials/timeline_page.html", context)


@require_POST
def milestone(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark a timeline event as "root cause identified" or "mitigation applied"
    (event, milestone), or take a mark back (undo). The new event arrives over the
    stream; a refusal shows next to nothing else changed."""
    incident = get_incident_for(request.user, pk, work=True)
    error = None
    try:
        if "undo" in request.POST:
            milestones.undo(incident, _posted_id(request.POST["undo"]), actor=request.user)
        else:
            milestones.mark(
                incident,
                _posted_id(request.POST.get("event")),
                request.POST.get("milestone", ""),
                actor=request.user,
            )
    except services.IncidentError as exc:
        error = str(exc)
    if request.htmx:
        return htmx_error(request, error) if error else HttpResponse(status=204)
    if error:
        messages.error(request, error)
    return redirect(incident)


def _posted_id(value: str | None) -> int:
    """A posted event id; 0 (no event) for anything that is not one."""
    try:
        number = int(value or 0)
    except ValueError:
        return 0
    return number if 0 < number < 2**63 else 0


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


def whos_told_context(incident: Incident) -> dict[str, Any]:
    notifications = list(incident.notifications.order_by("-created_at", "-pk")[:100])
    on_call = on_call_context()
    return {
        "on_call": on_call,
        "notifications": notifications,
        "reach": reach.for_incident(incident, notifications, rota_empty=on_call["now"] is None),
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


@require_POST
def regulatory_done(request: HttpRequest, pk: int, flag: str) -> HttpResponse:
    """Record a regulatory notification as done: its clock and escalation stop."""
    incident = get_incident_for(request.user, pk, work=True)
    clock = get_object_or_404(RegulatoryClock, incident=incident, flag=flag)
    return _act(
        request,
        pk,
        forms.NotifiedForm,
        lambda i, d: regulatory.record_notified(clock, actor=request.user, note=d["note"]),
    )
