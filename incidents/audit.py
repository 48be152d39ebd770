"""The audit trail: who did what, and when.

Built from three append-only records rather than one table copying the others:
- the incidents' timelines: every state change, note, check run, action,
  approval, grant by command, escalation, restriction (each has its actor, or
  LotoOps itself);
- Django admin's LogEntry: every add, change and delete made in admin;
- AuditEntry (`record`): what neither keeps, exports and grants made on the
  object-permission pages.
One writer each, so nothing can be on one record and missing from the other; the
trail follows the restricted-incident rule like every other surface.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from heapq import merge
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q

from .access import visible_condition
from .models import AuditEntry, Incident, TimelineEvent
from .timeline import actor_name

User = AbstractBaseUser | AnonymousUser


def record(
    actor: AbstractBaseUser | None,
    action: str,
    summary: str,
    *,
    incident: Incident | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor_name(actor),
        action=action,
        incident=incident,
        summary=summary[:300],
        data=data or {},
    )


@dataclass(frozen=True)
class Line:
    at: datetime
    who: str
    source: str  # timeline, admin, audit
    action: str
    incident_id: int | None
    summary: str


CSV_FIELDS = ["at", "who", "source", "action", "incident", "summary"]
ADMIN_ACTIONS = {1: "admin add", 2: "admin change", 3: "admin delete"}


def trail(user: User, start: datetime, end: datetime, *, limit: int = 10_000) -> list[Line]:
    """Everything from `start` (included) to `end` (excluded), newest first, of the
    incidents `user` may see (admin changes to an incident they may not see are
    left out too)."""
    condition = visible_condition(user)
    visible_ids = (
        None
        if condition is None
        else set(Incident.objects.filter(condition).values_list("pk", flat=True))
    )

    def may_see(incident_id: int | None) -> bool:
        return incident_id is None or visible_ids is None or incident_id in visible_ids

    events = TimelineEvent.objects.filter(created_at__gte=start, created_at__lt=end)
    if condition is not None:
        events = events.filter(visible_condition(user, "incident__") or Q())
    timeline = (
        Line(e.created_at, actor_name(e.actor), "timeline", e.kind, e.incident_id, e.message)
        for e in events.select_related("actor").order_by("-created_at", "-id")[:limit]
    )
    admin = (
        Line(
            e.action_time,
            actor_name(e.user),
            "admin",
            ADMIN_ACTIONS.get(e.action_flag, "admin"),
            _admin_incident(e),
            f"{e.content_type.name if e.content_type else ''} “{e.object_repr}”: "
            f"{e.get_change_message() or ADMIN_ACTIONS.get(e.action_flag, '')}",
        )
        for e in LogEntry.objects.filter(action_time__gte=start, action_time__lt=end)
        .select_related("user", "content_type")
        .order_by("-action_time", "-id")[:limit]
    )
    audit = (
        Line(e.at, e.actor_name, "audit", e.action, e.incident_id, e.summary)
        for e in AuditEntry.objects.filter(at__gte=start, at__lt=end).order_by("-at", "-id")[:limit]
    )
    lines = merge(timeline, admin, audit, key=lambda line: line.at, reverse=True)
    return [line for line in _first(lines, limit) if may_see(line.incident_id)]


def _admin_incident(entry: LogEntry) -> int | None:
    """The incident an admin change was made to, when it was made to an incident."""
    kind = entry.content_type
    if kind and (kind.app_label, kind.model) == ("incidents", "incident"):
        return int(entry.object_id) if entry.object_id.isdigit() else None
    return None


def _first(lines: Iterator[Line], limit: int) -> Iterator[Line]:
    for count, line in enumerate(lines):
        if count >= limit:
            return
        yield line


def csv_row(line: Line) -> list[str]:
    return [
        line.at.isoformat(),
        line.who,
        line.source,
        line.action,
        str(line.incident_id or ""),
        line.summary,
    ]
