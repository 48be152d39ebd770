"""The API's operations. Each fetches through incidents.access (404 for what the
caller may not see, 403 for what they may see but not change) and writes through
the same services as the pages."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status
from ninja.errors import HttpError
from pydantic import Field

from diagnostics import recovery
from diagnostics.models import CheckRun, RunbookStep, Target
from diagnostics.services import request_check
from incidents import services
from incidents.access import can_override_recovery, get_incident_for, visible_incidents
from incidents.models import (
    OPEN_STATUSES,
    ActionItem,
    Incident,
    PostMortem,
    Severity,
)
from incidents.models import Status as IncidentStatus
from incidents.postincident.actionitems import add_action_item, update_action_item
from incidents.postincident.postmortem import SECTIONS, PostMortemConflict, save_section

from . import schemas as s

router = Router()
Id = Annotated[int, Path(ge=1, le=s.MAX_ID)]
REFUSED = {401: s.Error, 403: s.Error, 404: s.Error, 409: s.Error, 422: s.Invalid}
READ = {401: s.Error, 404: s.Error, 422: s.Invalid}
NO_RUN, NO_ITEM = "No such check run", "No such action item"


def _user(request: HttpRequest) -> AbstractBaseUser:
    return request.auth  # type: ignore[attr-defined,no-any-return]


def _incident(request: HttpRequest, pk: int, *, work: bool = False) -> Incident:
    return get_incident_for(_user(request), pk, work=work)


def _incident_of(
    request: HttpRequest, incident_id: int, missing: str, *, work: bool = False
) -> None:
    """The access check of a run's or an item's incident: one the caller may not see
    answers exactly as a missing row does (`missing`), so the 404 says nothing of it."""
    try:
        _incident(request, incident_id, work=work)
    except Http404:
        raise Http404(missing) from None


def _person(username: str | None) -> AbstractBaseUser | None:
    if not username:
        return None
    person = get_user_model().objects.filter(username=username, is_active=True).first()
    if person is None:
        raise HttpError(400, f"No active user {username!r}.")
    return person


# --- incidents ---------------------------------------------------------------------


@router.get(
    "/incidents", response={200: s.IncidentPage, 401: s.Error, 422: s.Invalid}, tags=["incidents"]
)
def list_incidents(
    request: HttpRequest,
    status: Annotated[list[s.StatusName] | None, Query()] = None,
    severity: Annotated[list[Annotated[str, Field(pattern=r"^P[0-9]$")]] | None, Query()] = None,
    category: Annotated[list[s.CategoryName] | None, Query()] = None,
    open: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict:
    """Newest first, the incidents the caller may see (restricted ones only with access).
    Cursor pagination: pass `next_cursor` back as `cursor`."""
    incidents = visible_incidents(_user(request)).select_related(
        "severity", "commander", "declared_by"
    )
    if status:
        incidents = incidents.filter(status__in=status)
    if severity:
        incidents = incidents.filter(severity__key__in=severity)
    if category:
        incidents = incidents.filter(category__in=category)
    if open is not None:
        incidents = (incidents.filter if open else incidents.exclude)(status__in=OPEN_STATUSES)
    if cursor:
        incidents = incidents.filter(pk__lt=min(int(cursor), s.MAX_ID))
    page = list(incidents.order_by("-pk")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return {"items": page, "next_cursor": str(page[-1].pk) if more else None}


@router.post(
    "/incidents",
    response={201: s.IncidentOut, 400: s.Error, 401: s.Error, 403: s.Error, 422: s.Invalid},
    tags=["incidents"],
)
def declare(request: HttpRequest, body: s.DeclareIn) -> Status:
    """Declare an incident (needs `incidents.add_incident`, like the declare page)."""
    user = _user(request)
    if not user.has_perm("incidents.add_incident"):
        raise PermissionDenied("You may not declare incidents.")
    severity = Severity.objects.filter(key=body.severity).first()
    if severity is None:
        raise HttpError(400, f"Unknown severity {body.severity!r}.")
    try:
        incident = services.declare_incident(
            title=body.title,
            category=body.category,
            severity=severity,
            actor=user,
            summary=body.summary,
            impacted_services=body.impacted_services,
            affected_users=body.affected_users,
            flags=body.flags,
        )
    except services.IncidentError as exc:
        raise HttpError(400, str(exc)) from None
    return Status(201, _incident(request, incident.pk))


@router.get("/incidents/{incident_id}", response={200: s.IncidentOut, **READ}, tags=["incidents"])
def incident_detail(request: HttpRequest, incident_id: Id) -> Incident:
    return _incident(request, incident_id)


@router.post(
    "/incidents/{incident_id}/acknowledge",
    response={200: s.IncidentOut, **REFUSED},
    tags=["incidents"],
)
def acknowledge(request: HttpRequest, incident_id: Id) -> Incident:
    incident = _incident(request, incident_id, work=True)
    services.acknowledge_incident(incident, actor=_user(request))
    return _incident(request, incident_id)


@router.post(
    "/incidents/{incident_id}/transition",
    response={200: s.IncidentOut, 202: s.IncidentOut, **REFUSED},
    tags=["incidents"],
)
def transition(request: HttpRequest, incident_id: Id, body: s.TransitionIn) -> Status:
    """Move along the lifecycle (`allowed_transitions` says where). Resolving an
    incident whose procedure names recovery checks starts verifying them, as the page
    does: 202 with the incident still in its status, resolved once they pass twice
    (the timeline says how it goes). `override_reason` resolves without verification
    (incidents.override_recovery, else 403)."""
    incident = _incident(request, incident_id, work=True)
    user = _user(request)
    if body.override_reason.strip():
        if body.status != IncidentStatus.RESOLVED:
            raise services.IncidentError("override_reason goes only with status resolved.")
        if not can_override_recovery(user, incident):
            raise PermissionDenied("Only an incident commander may resolve without verification.")
        recovery.override_resolution(incident, actor=user, reason=body.override_reason)
    else:
        services.transition_incident(incident, body.status, actor=user, note=body.note)
    fresh = _incident(request, incident_id)
    held = body.status == IncidentStatus.RESOLVED and fresh.status != IncidentStatus.RESOLVED
    return Status(202 if held else 200, fresh)


@router.post(
    "/incidents/{incident_id}/notes", response={201: s.EventOut, **REFUSED}, tags=["incidents"]
)
def add_note(request: HttpRequest, incident_id: Id, body: s.TextIn) -> Status:
    incident = _incident(request, incident_id, work=True)
    return Status(201, services.add_note(incident, body.text, actor=_user(request)))


@router.post(
    "/incidents/{incident_id}/status-updates",
    response={201: s.EventOut, **REFUSED},
    tags=["incidents"],
)
def post_status_update(request: HttpRequest, incident_id: Id, body: s.TextIn) -> Status:
    """A status update for stakeholders (sent to everyone told so far)."""
    incident = _incident(request, incident_id, work=True)
    return Status(201, services.post_status_update(incident, body.text, actor=_user(request)))


# --- timeline ----------------------------------------------------------------------


@router.get(
    "/incidents/{incident_id}/timeline", response={200: s.EventPage, **READ}, tags=["timeline"]
)
def timeline(
    request: HttpRequest,
    incident_id: Id,
    after: Annotated[int, Query(ge=0, le=s.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> dict:
    """Events in order, after the event id `after` (the live stream's resume key)."""
    incident = _incident(request, incident_id)
    events = list(
        incident.timeline.filter(pk__gt=after).select_related("actor").order_by("pk")[:limit]
    )
    return {"items": events, "next_after": events[-1].pk if events else None}


# --- check runs --------------------------------------------------------------------


def _runs() -> QuerySet[CheckRun]:
    return CheckRun.objects.select_related("step", "requested_by")


@router.get(
    "/incidents/{incident_id}/check-runs",
    response={200: list[s.CheckRunOut], **READ},
    tags=["checks"],
)
def list_check_runs(
    request: HttpRequest, incident_id: Id, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[CheckRun]:
    """The incident's diagnostics and actions, newest first."""
    incident = _incident(request, incident_id)
    return list(_runs().filter(incident=incident).order_by("-pk")[:limit])


@router.post(
    "/incidents/{incident_id}/check-runs",
    response={201: list[s.CheckRunOut], 400: s.Error, **REFUSED},
    tags=["checks"],
)
def request_diagnostic(request: HttpRequest, incident_id: Id, body: s.CheckRequestIn) -> Status:
    """Queue a diagnostic (read-only step); actions need the page's review and confirmation."""
    incident = _incident(request, incident_id, work=True)
    step = RunbookStep.objects.filter(key=body.step).first()
    if step is None:
        raise HttpError(400, f"No runbook step {body.step!r}.")
    target = None
    if body.target:
        target = Target.objects.filter(name=body.target).first()
        if target is None:
            raise HttpError(400, f"No target {body.target!r}.")
    runs = request_check(incident, step, actor=_user(request), target=target)
    fresh = _runs().filter(pk__in=[r.pk for r in runs])
    return Status(201, list(fresh))


@router.get("/check-runs/{run_id}", response={200: s.CheckRunOut, **READ}, tags=["checks"])
def check_run(request: HttpRequest, run_id: Id) -> CheckRun:
    run = _runs().filter(pk=run_id).first()
    if run is None:
        raise Http404(NO_RUN)
    _incident_of(request, run.incident_id, NO_RUN)
    return run


# --- post-mortems and action items ---------------------------------------------------


def _postmortem(incident: Incident) -> PostMortem:
    pm = PostMortem.objects.filter(incident=incident).first()
    if pm is None:
        raise Http404("This incident has no post-mortem yet (it starts on resolution).")
    return pm


@router.get(
    "/incidents/{incident_id}/postmortem",
    response={200: s.PostMortemOut, **READ},
    tags=["post-mortems"],
)
def postmortem(request: HttpRequest, incident_id: Id) -> PostMortem:
    return _postmortem(_incident(request, incident_id))


@router.put(
    "/incidents/{incident_id}/postmortem/{section}",
    response={200: s.PostMortemOut, 400: s.Error, **REFUSED},
    tags=["post-mortems"],
)
def save_postmortem_section(
    request: HttpRequest,
    incident_id: Id,
    section: Annotated[str, Path(max_length=40)],
    body: s.SectionIn,
) -> PostMortem:
    """Save one section; 409 when someone saved it since `version` (send `original`,
    the text you started from, to save over changes to other sections)."""
    incident = _incident(request, incident_id, work=True)
    if section not in SECTIONS:
        raise Http404("No such section")
    try:
        return save_section(
            _postmortem(incident),
            section,
            body.values,
            version=body.version,
            original=body.original,
            actor=_user(request),
        )
    except PostMortemConflict as exc:
        raise HttpError(409, str(exc)) from None
    except services.IncidentError as exc:
        raise HttpError(400, str(exc)) from None


@router.get(
    "/incidents/{incident_id}/action-items",
    response={200: list[s.ActionItemOut], **READ},
    tags=["post-mortems"],
)
def action_items(request: HttpRequest, incident_id: Id) -> list[ActionItem]:
    incident = _incident(request, incident_id)
    return list(incident.action_items.select_related("owner", "step").order_by("pk"))


@router.post(
    "/incidents/{incident_id}/action-items",
    response={201: s.ActionItemOut, 400: s.Error, **REFUSED},
    tags=["post-mortems"],
)
def add_item(request: HttpRequest, incident_id: Id, body: s.ActionItemIn) -> Status:
    incident = _incident(request, incident_id, work=True)
    try:
        item = add_action_item(
            incident,
            text=body.text,
            owner=_person(body.owner),
            due_date=_date(body.due_date),
            actor=_user(request),
        )
    except services.IncidentError as exc:
        raise HttpError(400, str(exc)) from None
    return Status(201, item)


@router.patch(
    "/action-items/{item_id}",
    response={200: s.ActionItemOut, 400: s.Error, **REFUSED},
    tags=["post-mortems"],
)
def update_item(request: HttpRequest, item_id: Id, body: s.ActionItemUpdateIn) -> ActionItem:
    item = ActionItem.objects.filter(pk=item_id).first()
    if item is None:
        raise Http404(NO_ITEM)
    _incident_of(request, item.incident_id, NO_ITEM, work=True)
    try:
        return update_action_item(
            item,
            status=body.status,
            owner=_person(body.owner),
            due_date=_date(body.due_date),
            actor=_user(request),
        )
    except services.IncidentError as exc:
        raise HttpError(400, str(exc)) from None


def _date(value: date | None) -> date | None:
    if value is not None and not (date(2000, 1, 1) <= value <= date(2100, 12, 31)):
        raise HttpError(400, "Give a due date between 2000 and 2100.")
    return value
