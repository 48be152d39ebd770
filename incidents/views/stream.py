"""The live timeline: the SSE view and the renderer of what changed since the
last message (events, out-of-band panels, check-run output), per viewer class."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Hashable
from dataclasses import dataclass
from importlib import import_module
from typing import Any
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET

from .. import live, panels
from ..access import can_run_actions, can_view, can_work, dashboard_position, get_incident_for
from ..models import ChecklistItem, Incident, TimelineEvent, UserProfile
from ..rules import sessions as session_rules
from .incident import CSRF_PLACEHOLDER, status_panels_context, whos_told_context


@require_GET
async def stream(request: HttpRequest, pk: int) -> HttpResponse:
    """The incident's live timeline (SSE). Resumes after the last seq the page saw."""
    user = await request.auser()
    # The session and the user were read in this request's own thread, whose database
    # connection Django gives back only when the request ends: for a stream, when the
    # page goes. Give it back now (with 10 pooled connections, the 11th page would
    # wait); the stream borrows one per job from here on.
    await sync_to_async(connections.close_all)()
    try:
        renderer = await live.db(StreamRenderer.open, request, user, pk)
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
        live.timeline_stream(pk, after, renderer), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@require_GET
async def dashboard_stream(request: HttpRequest) -> HttpResponse:
    """The dashboard's wake-ups (SSE): "changed" when an incident the viewer may see
    changed in a way the list shows, after the position the page was drawn at; the page
    then fetches its list. The ids are the viewer's own (`dashboard_position`): they
    never move for, nor reveal, what happens on incidents the viewer may not see."""
    user = await request.auser()
    await sync_to_async(connections.close_all)()  # as `stream`: no connection held
    try:
        after = max(
            int(request.headers.get("Last-Event-ID") or 0), int(request.GET.get("after") or 0)
        )
    except ValueError:
        return HttpResponseBadRequest("Last-Event-ID and after must be positions")
    response = StreamingHttpResponse(
        live.timeline_stream(live.DASHBOARD, after, DashboardFollower(request, user)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class DashboardFollower:
    """An open dashboard's side of its stream (`live.Follower`): no HTML of its own, a
    "changed" message when the list its viewer sees may have changed. Every wake-up
    (any incident's change) is checked against the viewer's own position, shared by
    the dashboards of one viewer: a change nobody else may see wakes nobody else."""

    personal = ""
    has_own_updates = False
    # "changed" says nothing about any incident: the periodic re-check (every
    # SSE_ACCESS_RECHECK s) ends the streams of sessions that ended; no re-check of
    # every open dashboard before each message.
    check_each_event = False
    # Each "changed" is a list fetch: at most two a second per page, whatever the
    # number of incidents that change at once; and with many dashboards open in this
    # process, fewer, spread at random, to DASHBOARD_LIVE_FETCHES a second in all.
    FASTEST, SLOWEST = 0.5, 20.0

    @property
    def min_interval(self) -> float:
        open_here = live.active_streams[live.DASHBOARD]
        share = open_here / max(settings.DASHBOARD_LIVE_FETCHES, 0.1)
        return min(self.SLOWEST, max(self.FASTEST, share))

    def spread(self) -> float:
        """A random pause before a "changed": the dashboards woken by one change do not
        all fetch their list in the same instant."""
        return random.uniform(0.0, self.min_interval - self.FASTEST)

    def __init__(self, request: HttpRequest, user: Any) -> None:
        self.request = request
        self.user = user
        self.user_id = user.pk
        session = getattr(request, "session", None)
        self.session_key = session.session_key if session is not None else None
        # Per viewer: what one may see is not what another may.
        self.key: Hashable | None = ("dashboard", user.pk)

    def render_events(self, after: int) -> live.Batch:
        position = dashboard_position(self.user)
        if position == after:
            return [], after
        return [(position, "changed", "")], position

    def personalise(self, html: str) -> str:
        return html

    def live_items(self) -> list[panels.LiveItem]:
        return []

    def pick_updates(self, items: list[panels.LiveItem]) -> list[live.Message]:
        return []

    def own_updates(self) -> list[live.Message]:
        return []

    def recheck(self, followers: list[DashboardFollower]) -> None:
        users = signed_in(followers)
        for follower in followers:
            user = users.get(id(follower))
            # The fresh user: its permissions (what it may see) as they are now.
            follower.user = user if user is not None else follower.user
            follower.key = ("dashboard", user.pk) if user is not None else None


@dataclass(frozen=True)
class Viewer:
    """A viewer class: what a viewer may do on the incident, which is all that changes
    the panels drawn. Streams of one class share the rendering of new events."""

    can_work: bool
    can_act: bool
    # What the panels draw differently per viewer (e.g. who may approve which request).
    panels: tuple[Hashable, ...] = ()
    # The time zone the viewer reads times in (their profile's, else the site's).
    zone: str = ""

    @classmethod
    def of(cls, user: Any, incident: Incident) -> Viewer | None:
        if not can_view(user, incident):
            return None
        return cls(
            can_work=can_work(user, incident),
            can_act=can_run_actions(user, incident),
            panels=panels.viewer_keys(user, incident),
            zone=UserProfile.zone_of(user),
        )

    def times(self) -> contextlib.AbstractContextManager[None]:
        """Render in the viewer's zone: the stream outlives its request's middleware."""
        return timezone.override(ZoneInfo(self.zone)) if self.zone else contextlib.nullcontext()


class StreamRenderer:
    """One open page's side of the stream (`live.Follower`): renders new timeline
    events (with their seq, plus out-of-band header, checklist and panel updates
    where an event changed them) for its viewer class, and its own live output of
    check runs (id-less "run" messages)."""

    # Each event says something about the incident: its viewer is re-checked first.
    check_each_event = True
    min_interval = 0.0

    def __init__(self, request: HttpRequest, incident_id: int, user: Any = None) -> None:
        self.request = request
        self.incident_id = incident_id
        self.user_id = (user or request.user).pk
        session = getattr(request, "session", None)
        self.session_key = session.session_key if session is not None else None
        # Read now, in the request: the shared HTML carries a placeholder instead.
        self.csrf_token = get_token(request)
        # Pages with the same CSRF secret may share one text: any masking of the secret
        # is valid for all of them.
        self.personal = request.META.get("CSRF_COOKIE") or self.csrf_token
        self.key: Viewer | None = None
        # What of the panels' shared live items (a check run's output) this page was sent.
        self.live_sent = panels.SentVersions()
        # The panels' own per-stream live updates (those that differ per viewer).
        self.live_updates = [p.live() for p in panels.PANELS.values() if p.live is not None]
        self.has_own_updates = bool(self.live_updates)

    def spread(self) -> float:
        return 0.0

    @classmethod
    def open(cls, request: HttpRequest, user: Any, pk: int) -> StreamRenderer:
        """The page's renderer, if `user` may see the incident (Http404 otherwise)."""
        incident = get_incident_for(user, pk)
        renderer = cls(request, incident.pk, user)
        renderer.key = Viewer.of(user, incident)
        return renderer

    def __call__(self, after: int) -> live.Batch:
        """Everything after `after` for this page alone: events, then live updates."""
        if self.key is None:
            self.key = Viewer.of(self.request.user, Incident.objects.get(pk=self.incident_id))
        messages, after = self.render_events(after)
        personal = [(seq, name, self.personalise(html)) for seq, name, html in messages]
        return personal + self.updates(), after

    def render_events(self, after: int, limit: int = 200) -> live.Batch:
        events = list(
            TimelineEvent.objects.filter(incident_id=self.incident_id, seq__gt=after)
            .select_related("actor")
            .order_by("seq")[:limit]
        )
        if not events or self.key is None:
            return [], after
        incident = Incident.objects.select_related("severity", "commander").get(pk=self.incident_id)
        with self.key.times():
            return self._events(incident, events, self.key), events[-1].seq

    def personalise(self, html: str) -> str:
        return html.replace(CSRF_PLACEHOLDER, self.csrf_token)

    def live_items(self) -> list[panels.LiveItem]:
        return panels.live_items(self.incident_id)

    def pick_updates(self, items: list[panels.LiveItem]) -> list[live.Message]:
        return self.live_sent.pick(items)

    def own_updates(self) -> list[live.Message]:
        out: list[live.Message] = []
        with self.key.times() if self.key is not None else contextlib.nullcontext():
            for updates in self.live_updates:
                out += updates(self.request, self.incident_id)
        return out

    def updates(self) -> list[live.Message]:
        """This page's live updates on its own (not shared: the stream shares them)."""
        return self.pick_updates(self.live_items()) + self.own_updates()

    def recheck(self, followers: list[StreamRenderer]) -> None:
        recheck_viewers(followers)

    def _events(
        self, incident: Incident, events: list[TimelineEvent], viewer: Viewer
    ) -> list[live.Message]:
        kinds = {e.kind for e in events}
        items = _checklist_items(events)
        # The viewer's class decides the controls; the token is each page's own.
        shared: dict[str, Any] = {"can_work": viewer.can_work, "csrf_token": CSRF_PLACEHOLDER}
        out = []
        for index, event in enumerate(events):
            context: dict[str, Any] = {"event": event, "incident": incident} | shared
            if index == len(events) - 1:
                if kinds & live.HEADER_KINDS:
                    context |= {"oob_header": True, "oob_status_panels": True}
                    context |= status_panels_context(incident)
                if refreshed := panels.refreshed_by(kinds):
                    context["oob_panels"] = refreshed
                    for panel in refreshed:
                        context |= panel.context(self.request, incident) | shared
                if kinds & live.TOLD_KINDS:
                    context |= {"oob_told": True} | whos_told_context(incident)
            if event.kind == "checklist" and (item := items.get(event.data.get("item"))):
                context["oob_item"] = item
            html = render_to_string("incidents/partials/timeline_event.html", context, self.request)
            out.append((event.seq, "timeline", html))
        return out


def recheck_viewers(renderers: list[StreamRenderer]) -> None:
    """Set each open stream's viewer class afresh (None when its access is gone): the
    session still exists for that user (not logged out, expired, or invalidated by a
    password change), the user is active, and may still see the incident. One pass
    for all the streams of the process: each session, user and incident read once."""
    users = signed_in(renderers)
    incidents = Incident.objects.in_bulk({r.incident_id for r in renderers})
    classes: dict[tuple[int, int], Viewer | None] = {}
    for renderer in renderers:
        user = users.get(id(renderer))
        incident = incidents.get(renderer.incident_id)
        if user is None or incident is None:
            renderer.key = None
            continue
        pair = (user.pk, incident.pk)
        if pair not in classes:
            classes[pair] = Viewer.of(user, incident)
        renderer.key = classes[pair]
        # Panels read permissions from the request's user: the fresh one, not its cache.
        renderer.request.user = user


def signed_in(followers: list[Any]) -> dict[int, Any]:
    """Each follower's user (by `id(follower)`) if its session still exists for that
    user (not logged out, expired, past its age or idle limit, or invalidated by a
    password change) and the user is active; each session and user read once. An open
    stream is not activity: it ends once its person has been idle SESSION_IDLE_TIMEOUT."""
    sessions = _sessions({f.session_key for f in followers})
    users = get_user_model().objects.in_bulk({f.user_id for f in followers})
    now = timezone.now().timestamp()
    out: dict[int, Any] = {}
    for follower in followers:
        session = sessions.get(follower.session_key) or {}
        user = users.get(follower.user_id)
        if (
            user is not None
            and user.is_active
            and session.get(SESSION_KEY) == str(user.pk)
            and not session_rules.expired(
                session,
                now,
                max_age=settings.SESSION_MAX_AGE,
                idle=settings.SESSION_IDLE_TIMEOUT,
            )
            and constant_time_compare(
                session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
            )
        ):
            out[id(follower)] = user
    return out


def _sessions(keys: set[str | None]) -> dict[str | None, dict[str, Any]]:
    """The data of each live session among `keys` (absent: ended or expired). With
    database sessions, one query for all of them (hundreds of pages, one per viewer,
    are re-checked every few seconds); otherwise one load per session."""
    engine = import_module(settings.SESSION_ENGINE)
    wanted = [key for key in keys if key]
    if settings.SESSION_ENGINE == "django.contrib.sessions.backends.db":
        from django.contrib.sessions.models import Session

        store = engine.SessionStore()
        rows = Session.objects.filter(session_key__in=wanted, expire_date__gt=timezone.now())
        return {row.session_key: store.decode(row.session_data) for row in rows}
    return {key: engine.SessionStore(key).load() for key in wanted}


def _checklist_items(events: list[TimelineEvent]) -> dict[int, ChecklistItem]:
    """The checklist items ticked in these events, in one query (a replay after a
    long disconnect can hold many)."""
    ids = [e.data.get("item") for e in events if e.kind == "checklist" and e.data.get("item")]
    if not ids:
        return {}
    return ChecklistItem.objects.select_related("done_by").in_bulk(ids)
