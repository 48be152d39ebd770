"""The post-mortem editor (per-section HTMX editing that also works as plain
forms) and action items. Every incident is fetched through incidents.access
(restricted incidents stay hidden: 404), every change goes through
incidents.postincident's services."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import forms
from ..access import can_work, get_incident_for, visible_incidents
from ..models import (
    OPEN_ACTION_STATUSES,
    ActionItem,
    ActionItemStatus,
    Incident,
    PostMortem,
)
from ..postincident.actionitems import add_action_item, update_action_item
from ..postincident.milestones import incident_milestones, key_times
from ..postincident.postmortem import (
    SECTION_LABELS,
    SECTIONS,
    PostMortemConflict,
    ensure_postmortem,
    is_postmortem_noise,
    save_section,
    save_timeline_selection,
)
from ..services import IncidentError

MULTILINE = {"summary", "root_cause", "resolution", "lessons_learned"}


FIELD_LABELS = {
    "impact_users": "Number of affected users",
    "impact_revenue": "Revenue impact",
    "impact_data": "Data impact",
}


def _section(
    pm: PostMortem,
    key: str,
    *,
    editing: bool = False,
    mine: dict[str, str] | None = None,
    conflict: bool = False,
    error: str = "",
) -> dict[str, Any]:
    """What one section's partial shows; `mine` is the user's unsaved text."""
    fields = [
        {
            "name": name,
            "label": FIELD_LABELS.get(name, SECTION_LABELS[key]),
            "value": getattr(pm, name),
            "mine": (mine or {}).get(name),
            "multiline": key in MULTILINE or key == "impact",
        }
        for name in SECTIONS[key]
    ]
    return {
        "key": key,
        "label": SECTION_LABELS[key],
        "fields": fields,
        "editing": editing or conflict or bool(error),
        "conflict": conflict,
        "error": error,
    }


def _picker(pm: PostMortem, chosen: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    selected = set(pm.timeline_event_ids if chosen is None else chosen)
    events = [
        e
        for e in pm.incident.timeline.select_related("actor").order_by("id")
        if not is_postmortem_noise(e)
    ]
    return {"events": events, "selected": selected, "original": pm.timeline_event_ids} | extra


def _page_context(request: HttpRequest, incident: Incident, pm: PostMortem | None) -> dict:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    context: dict[str, Any] = {
        "incident": incident,
        "pm": pm,
        "can_work": can_work(request.user, incident),
    }
    if pm is None:
        return context
    editing = request.GET.get("edit", "")
    return (
        context
        | {
            "sections": [_section(pm, key, editing=key == editing) for key in SECTIONS],
            "picker": _picker(pm),
            "facts": {
                "date": exports.report_date(incident),
                "duration": exports.report_duration(incident),
                "severity": incident.severity.key,
                "key_times": [
                    (key.label, exports.key_time_text(key))
                    for key in key_times(incident, incident_milestones(incident))
                ],
            },
        }
        | _items_context(incident)
    )


def _items_context(incident: Incident) -> dict[str, Any]:
    items = incident.action_items.select_related("owner", "step", "verification_run")
    return {
        "items": list(items.order_by("due_date", "pk")),
        "item_form": forms.ActionItemForm(),
        "users": forms.ActionItemUpdateForm().fields["owner"].queryset,
        "statuses": ActionItemStatus.choices,
        "today": timezone.localdate(),
    }


@require_GET
def postmortem(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    pm = PostMortem.objects.filter(incident=incident).select_related("updated_by").first()
    return render(request, "incidents/postmortem.html", _page_context(request, incident, pm))


@require_POST
def postmortem_start(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    try:
        ensure_postmortem(incident, actor=request.user)
    except IncidentError as exc:
        messages.error(request, str(exc))
    return redirect("incidents:postmortem", pk=pk)


@require_http_methods(["GET", "POST"])
def postmortem_section(request: HttpRequest, pk: int, section: str) -> HttpResponse:
    """GET: the section (`?edit=1`: its editor). POST: save it, refusing a stale save."""
    incident = get_incident_for(request.user, pk, work=request.method == "POST")
    pm = get_object_or_404(PostMortem, incident=incident)
    if section not in SECTIONS:
        raise Http404("No such section")
    context = {"incident": incident, "pm": pm, "can_work": can_work(request.user, incident)}
    if request.method == "GET":
        context["s"] = _section(pm, section, editing=request.GET.get("edit") == "1")
        return render(request, "incidents/postmortem.html#section", context)
    fields = SECTIONS[section]
    mine = {f: request.POST.get(f, "") for f in fields}
    original = {f: request.POST.get(f"original_{f}", "") for f in fields}
    status = 200
    try:
        if any("\x00" in text for text in (*mine.values(), *original.values())):
            raise IncidentError("The text contains a NUL character: remove it and save again.")
        pm = save_section(
            pm, section, mine, version=_int(request.POST.get("version")), original=original,
            actor=request.user,
        )  # fmt: skip
        context |= {"pm": pm, "s": _section(pm, section)}
    except PostMortemConflict as exc:
        pm, status = exc.current, 409
        context |= {"pm": pm, "s": _section(pm, section, mine=mine, conflict=True, error=str(exc))}
    except IncidentError as exc:
        status = 422
        context["s"] = _section(pm, section, mine=mine, error=str(exc))
    if request.htmx:
        return render(request, "incidents/postmortem.html#section", context, status=status)
    if status == 200:
        return redirect(reverse("incidents:postmortem", args=[pk]) + f"#pm-{section}")
    page = _page_context(request, incident, pm)
    page["sections"] = [context["s"] if s["key"] == section else s for s in page["sections"]]
    return render(request, "incidents/postmortem.html", page, status=status)


def _int(value: str | None) -> int:
    """A posted id or version; 0 (matches nothing) for anything else, a number
    beyond a database integer's range included."""
    try:
        number = int(value or 0)
    except ValueError:
        return 0
    return number if 0 <= number < 2**63 else 0


@require_POST
def postmortem_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    """Save which timeline events the report shows."""
    incident = get_incident_for(request.user, pk, work=True)
    pm = get_object_or_404(PostMortem, incident=incident)
    chosen = [_int(v) for v in request.POST.getlist("events")]
    original = [_int(v) for v in request.POST.get("original", "").split(",") if v]
    status, picker = 200, None
    try:
        pm = save_timeline_selection(
            pm, chosen, version=_int(request.POST.get("version")), original=original,
            actor=request.user,
        )  # fmt: skip
    except PostMortemConflict as exc:
        pm, status = exc.current, 409
        picker = _picker(pm, chosen, error=str(exc), conflict=True)
    except IncidentError as exc:
        status, picker = 422, _picker(pm, chosen, error=str(exc))
    context = {"incident": incident, "pm": pm, "can_work": True, "picker": picker or _picker(pm)}
    if request.htmx:
        return render(request, "incidents/postmortem.html#picker", context, status=status)
    if status == 200:
        return redirect(reverse("incidents:postmortem", args=[pk]) + "#pm-timeline")
    page = _page_context(request, incident, pm) | {"picker": context["picker"]}
    return render(request, "incidents/postmortem.html", page, status=status)


@require_POST
def action_item_add(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk, work=True)
    form = forms.ActionItemForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            add_action_item(incident, actor=request.user, **form.cleaned_data)
        except IncidentError as exc:
            error = str(exc)
    else:
        error = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
    if request.htmx:
        context = {"incident": incident, "can_work": True, "item_error": error}
        context |= _items_context(incident)
        if error:
            context["item_form"] = form
        return render(
            request, "incidents/postmortem.html#action-items", context, status=422 if error else 200
        )
    if error:
        messages.error(request, error)
    return redirect(reverse("incidents:postmortem", args=[pk]) + "#action-items")


@require_http_methods(["GET", "POST"])
def action_item(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """GET: the item's row (polled while its check runs). POST: status, owner, due date."""
    incident = get_incident_for(request.user, pk, work=request.method == "POST")
    item = get_object_or_404(ActionItem, pk=item_pk, incident=incident)
    error = ""
    if request.method == "POST":
        form = forms.ActionItemUpdateForm(request.POST)
        if form.is_valid():
            try:
                item = update_action_item(item, actor=request.user, **form.cleaned_data)
            except IncidentError as exc:
                error = str(exc)
        else:
            error = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
    return item_response(request, incident, item, error)


def item_response(
    request: HttpRequest, incident: Incident, item: ActionItem, error: str
) -> HttpResponse:
    if not request.htmx and request.method == "POST":
        if error:
            messages.error(request, error)
        return redirect(
            same_site_path(request, request.POST.get("next", "")) or _pm_items_url(incident)
        )
    item = ActionItem.objects.select_related("owner", "step", "verification_run").get(pk=item.pk)
    context = {
        "item": item,
        "incident": incident,
        "can_work": can_work(request.user, incident),
        "item_error": error,
        "users": forms.ActionItemUpdateForm().fields["owner"].queryset,
        "statuses": ActionItemStatus.choices,
        "today": timezone.localdate(),
        "show_incident": request.GET.get("list") == "1" or request.POST.get("list") == "1",
    }
    return render(
        request, "incidents/partials/action_item.html", context, status=422 if error else 200
    )


def same_site_path(request: HttpRequest, target: str) -> str:
    """`target` when it is a path on this site ("/action-items/?mine=1"), else "":
    never another host, another scheme, or a bare word that is no URL at all."""
    if not target.startswith("/") or not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return ""
    return target


def _pm_items_url(incident: Incident) -> str:
    return reverse("incidents:postmortem", args=[incident.pk]) + "#action-items"


@require_GET
def action_items(request: HttpRequest) -> HttpResponse:
    """Action items across the incidents the user may see: ?mine=1, ?overdue=1, ?open=1."""
    form = forms.ActionItemFilterForm(request.GET)
    form.is_valid()
    flags = form.cleaned_data
    today = timezone.localdate()
    items = ActionItem.objects.filter(incident__in=visible_incidents(request.user)).select_related(
        "incident", "incident__severity", "owner", "step", "verification_run"
    )
    if flags.get("mine"):
        items = items.filter(owner=request.user)
    if flags.get("overdue"):
        items = items.filter(status__in=OPEN_ACTION_STATUSES, due_date__lt=today)
    elif flags.get("open"):
        items = items.filter(status__in=OPEN_ACTION_STATUSES)
    context = {
        "form": form,
        "items": list(items.order_by("due_date", "pk")[:500]),
        "today": today,
        "users": forms.ActionItemUpdateForm().fields["owner"].queryset,
        "statuses": ActionItemStatus.choices,
        "show_incident": True,
    }
    return render(request, "incidents/action_items.html", context)
