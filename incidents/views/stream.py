"""The live timeline: the SSE view and the renderer of what changed since the
last message (events, out-of-band panels, check-run output)."""

from __future__ import annotations

from typing import Any

from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    StreamingHttpResponse,
)
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from .. import live, panels
from ..access import can_work, get_incident_for
from ..models import (
    ChecklistItem,
    Incident,
    TimelineEvent,
)
from .incident import whos_told_context

# Events that change what the incident header shows (status, SLA, severity, commander).
HEADER_KINDS = {"declared", "acknowledged", "status", "reopened", "severity", "commander"}


# Events that change the "Who's told" card.
TOLD_KINDS = {"escalation", "notification", "acknowledged"}


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
        return HttpResponseBadRequest("Last-Event-ID and after must be sequence numbers")

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

    def __init__(self, request: HttpRequest, incident_id: int) -> None:
        self.request = request
        self.incident_id = incident_id
        # Each panel's id-less live updates (a check run's output), with their state.
        self.live_updates = [p.live() for p in panels.PANELS.values() if p.live is not None]

    def __call__(self, after: int, limit: int = 200) -> tuple[list[live.Message], int]:
        events = list(
            TimelineEvent.objects.filter(incident_id=self.incident_id, seq__gt=after)
            .select_related("actor")
            .order_by("seq")[:limit]
        )
        out: list[live.Message] = []
        incident = None
        if events:
            incident = Incident.objects.select_related("severity", "commander").get(
                pk=self.incident_id
            )
            out += self._events(incident, events)
            after = events[-1].seq
        for updates in self.live_updates:
            out += updates(self.request, self.incident_id)
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
                if refreshed := panels.refreshed_by(kinds):
                    context["oob_panels"] = refreshed
                    for panel in refreshed:
                        context |= panel.context(self.request, incident)
                if kinds & TOLD_KINDS:
                    context |= {"oob_told": True} | whos_told_context(incident)
            if event.kind == "checklist" and (item := items.get(event.data.get("item"))):
                context["oob_item"] = item
            html = render_to_string("incidents/partials/timeline_event.html", context, self.request)
            out.append((event.seq, "timeline", html))
        return out


def _checklist_items(events: list[TimelineEvent]) -> dict[int, ChecklistItem]:
    """The checklist items ticked in these events, in one query (a replay after a
    long disconnect can hold many)."""
    ids = [e.data.get("item") for e in events if e.kind == "checklist" and e.data.get("item")]
    if not ids:
        return {}
    return ChecklistItem.objects.select_related("done_by").in_bulk(ids)
