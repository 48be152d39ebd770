"""The dashboard (open incidents, on call, overdue follow-ups) and declaring an incident."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
)
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from .. import forms, services
from ..access import dashboard_position, visible_condition, visible_incidents
from ..models import (
    OPEN_ACTION_STATUSES,
    OPEN_STATUSES,
    POST_PHASES,
    ActionItem,
    ChecklistItem,
    ChecklistTemplate,
    Incident,
    Status,
    channel_name_for,
)
from ..paging import oncall, reach

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

SHOWN, CAP = 5, 100  # overdue follow-ups listed, counted up to


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    # Where the page's live stream starts, read before the list: a change committed
    # from here on redraws it (a full page only: a redraw keeps its stream).
    after = None if request.htmx else dashboard_position(request.user)
    form = forms.DashboardFilterForm(request.GET or None)
    incidents = (
        visible_incidents(request.user)
        .select_related("severity", "commander")
        .only(*DASHBOARD_FIELDS)
    )
    filters: dict[str, Any] = {}
    if form.is_valid():
        filters = {k: v for k, v in form.cleaned_data.items() if v}
    open_incidents = list(_filter_open(incidents, filters)[:200])
    on_call = on_call_context()
    context = {
        "form": form,
        "on_call": on_call,
        "reach": reach_context(open_incidents, on_call),
        "open_incidents": open_incidents,
        # resolved_at is set exactly while an incident is resolved or closed: this
        # walks the resolved_at index instead of sorting every closed incident.
        "recent_closed": incidents.filter(resolved_at__isnull=False).order_by("-resolved_at")[:10],
        "query": request.GET.urlencode(),
    }
    if request.htmx:
        return render(request, "incidents/dashboard.html#incident-list", context)
    context["followups"] = overdue_followups(request.user)
    context["dashboard_after"] = after
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


def reach_context(open_incidents: list[Incident], on_call: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's warning: incidents waiting for an acknowledgement that no page
    can reach, and what is wrong with paging whatever the incident."""
    waiting = [i for i in open_incidents if i.status == Status.DECLARED]
    unreachable = reach.unreachable_incidents(i.pk for i in waiting)
    return {
        "problems": reach.setup_problems(rota_empty=on_call["now"] is None),
        "unreachable": [i for i in waiting if i.pk in unreachable],
    }


def on_call_context() -> dict[str, Any]:
    """Who is on call now and next, in the rotation's own time zone. On a one-person
    rota (or when the same person holds the next shift too) there is no "next": the
    same person continues, and the card says so instead of showing a gap."""
    now_member, next_member, now_shift, next_shift = oncall.on_call()
    member = now_member or next_member
    continues = (
        now_member is not None and next_member is not None and next_member.pk == now_member.pk
    )
    return {
        "now": now_member,
        "next": None if continues else next_member,
        "now_shift": now_shift,
        "next_shift": None if continues else next_shift,
        "continues": continues,
        # The related manager caches the member's rotation: no query.
        "zone": member.rotation.time_zone if member is not None else "",
    }


def _first_and_count(queryset: Any) -> tuple[list[Any], str]:
    """The first few rows and how many there are, up to CAP ("100+"), in one query:
    a dashboard needs no exact count of a backlog."""
    rows = list(queryset[: CAP + 1])
    return rows[:SHOWN], f"{CAP}+" if len(rows) > CAP else str(len(rows))


def overdue_followups(user: Any) -> dict[str, Any]:
    """For the dashboard: post-incident checklist items past due and not done, and
    overdue action items, on incidents the user may see."""

    now = timezone.now()
    visible = visible_condition(user, "incident__") or Q()
    checklist, checklist_count = _first_and_count(
        ChecklistItem.objects.filter(
            visible, phase__in=POST_PHASES, done_at__isnull=True, due_at__lt=now
        )
        .only("text", "phase", "due_at", "incident_id")
        .order_by("due_at", "pk")
    )
    items, items_count = _first_and_count(
        ActionItem.objects.filter(
            visible, status__in=OPEN_ACTION_STATUSES, due_date__lt=timezone.localdate()
        )
        .select_related("owner")
        .order_by("due_date", "pk")
    )
    return {
        "overdue_checklist": checklist,
        "overdue_checklist_count": checklist_count,
        "overdue_items": items,
        "overdue_items_count": items_count,
    }
