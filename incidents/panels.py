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


class LiveUpdates:
    """One open stream's state for a panel's id-less updates (what it already sent)."""

    def __call__(self, request: HttpRequest, incident_id: int) -> list[Message]:
        raise NotImplementedError


@dataclass(frozen=True)
class Panel:
    name: str
    template: str
    # (request, incident, expand=...) -> context; its keys join the page's context.
    context: Callable[..., dict[str, Any]]
    refresh_on: frozenset[str] = frozenset()
    # Made once per open stream; called when the panel's output may have changed.
    live: Callable[[], LiveUpdates] | None = None
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


def refreshed_by(kinds: set[str]) -> list[Panel]:
    return [panel for panel in PANELS.values() if panel.refresh_on & kinds]
