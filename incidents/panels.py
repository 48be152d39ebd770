"""Panels that other apps contribute to the incident page.

`incidents` never imports `diagnostics`: the runbook panel is registered here by
diagnostics' AppConfig.ready. A panel gives its template, the context it needs,
the timeline event kinds after which the live stream re-renders it, and
optionally id-less live updates (a check run's streaming output).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from .models import Incident

# (event id or None, SSE event name, HTML)
Message = tuple[int | None, str, str]


# One live item of a panel: (what it is, its version, SSE event name, HTML).
LiveItem = tuple[Hashable, Hashable, str, str]


class LiveUpdates:
    """One open stream's state for a panel's own id-less updates (what it already sent),
    for updates that differ per viewer (`Panel.live`)."""

    def __call__(self, request: HttpRequest, incident_id: int) -> list[Message]:
        raise NotImplementedError


class SentVersions:
    """One open stream's side of the panels' shared live items (`Panel.live_items`):
    the version of each it sent. The items are fetched once per process per change and
    shared; each stream only picks those it has not sent in that version."""

    def __init__(self) -> None:
        self.sent: dict[Hashable, Hashable] = {}

    def pick(self, items: list[LiveItem]) -> list[Message]:
        out: list[Message] = []
        for key, version, event, html in items:
            if self.sent.get(key) != version:
                self.sent[key] = version
                out.append((None, event, html))
        return out


@dataclass(frozen=True)
class Panel:
    name: str
    template: str
    # (request, incident, expand=...) -> context; its keys join the page's context.
    context: Callable[..., dict[str, Any]]
    refresh_on: frozenset[str] = frozenset()
    # Made once per open stream; called when the panel's output may have changed (for
    # updates that differ per viewer: each stream queries and draws its own).
    live: Callable[[], LiveUpdates] | None = None
    # incident id -> the incident's live items (a check run's output), fetched when the
    # panel's output may have changed: once per process for every open stream of the
    # incident, so they must not differ between viewers. Prefer it to `live`.
    live_items: Callable[[int], list[LiveItem]] | None = None
    # Without Redis, how the process's one poll sees that change: incident ids ->
    # a value per incident that changes when its live output does.
    poll: Callable[[list[int]], dict[int, Hashable]] | None = None
    # What, beyond working the incident and running actions, makes this panel look
    # different for one viewer than another: (user, incident) -> a hashable value.
    # Live streams share a rendering only between viewers with equal values.
    viewer_key: Callable[[Any, Incident], Hashable] | None = None
    # Where the incident page lays it out: "side" (the side column, under the
    # checklist) or "top" (full width, right under the incident's header: the runbook).
    place: str = "side"


PANELS: dict[str, Panel] = {}


def register(panel: Panel) -> None:
    PANELS[panel.name] = panel


def viewer_keys(user: Any, incident: Incident) -> tuple[Hashable, ...]:
    return tuple(p.viewer_key(user, incident) for p in PANELS.values() if p.viewer_key)


def page_context(request: HttpRequest, incident: Incident, **options: Any) -> dict[str, Any]:
    """Every panel's context for the incident page, and the panels to include."""
    context: dict[str, Any] = {"panels": list(PANELS.values())}
    for panel in PANELS.values():
        context |= panel.context(request, incident, **options)
    return context


def live_items(incident_id: int) -> list[LiveItem]:
    """Every panel's live items of the incident (shared by its open streams)."""
    items: list[LiveItem] = []
    for panel in PANELS.values():
        if panel.live_items is not None:
            items += panel.live_items(incident_id)
    return items


def refreshed_by(kinds: set[str]) -> list[Panel]:
    return [panel for panel in PANELS.values() if panel.refresh_on & kinds]
