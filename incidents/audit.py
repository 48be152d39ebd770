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

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from heapq import merge
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, Q

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
# A row of an incident deleted since: shown only to who sees every incident.
UNKNOWN_INCIDENT = -1


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
    entries = list(
        LogEntry.objects.filter(action_time__gte=start, action_time__lt=end)
        .select_related("user", "content_type")
        .order_by("-action_time", "-id")[:limit]
    )
    incident_of = _admin_incidents(entries)
    admin = (
        Line(
            e.action_time,
            actor_name(e.user),
            "admin",
            ADMIN_ACTIONS.get(e.action_flag, "admin"),
            incident_of.get(e.pk),
            f"{e.content_type.name if e.content_type else ''} “{e.object_repr}”: "
            f"{e.get_change_message() or ADMIN_ACTIONS.get(e.action_flag, '')}",
        )
        for e in entries
    )
    audit = (
        Line(e.at, e.actor_name, "audit", e.action, e.incident_id, e.summary)
        for e in AuditEntry.objects.filter(at__gte=start, at__lt=end).order_by("-at", "-id")[:limit]
    )
    lines = merge(timeline, admin, audit, key=lambda line: line.at, reverse=True)
    return [line for line in _first(lines, limit) if may_see(line.incident_id)]


def _admin_incidents(entries: list[LogEntry]) -> dict[int, int]:
    """{log entry id: incident id} for admin changes made to an incident or to a row
    of one (a timeline event, an action item, a check run…): one query per model."""
    wanted: dict[type[Model], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    found: dict[int, int] = {}
    for entry in entries:
        model = entry.content_type.model_class() if entry.content_type else None
        if model is Incident:
            if entry.object_id.isdigit():
                found[entry.pk] = int(entry.object_id)
        elif model is not None and any(f.name == "incident" for f in model._meta.fields):
            wanted[model][entry.object_id].append(entry.pk)
    for model, by_object in wanted.items():
        ids = [pk for pk in by_object if pk.isdigit()]
        for pk, incident_id in model._default_manager.filter(pk__in=ids).values_list(
            "pk", "incident_id"
        ):
            for entry_id in by_object[str(pk)]:
                found[entry_id] = incident_id
        for entry_ids in by_object.values():  # deleted since: of no known incident
            if not any(entry_id in found for entry_id in entry_ids):
                for entry_id in entry_ids:
                    found.setdefault(entry_id, UNKNOWN_INCIDENT)
    return found


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
        str(line.incident_id) if line.incident_id and line.incident_id > 0 else "",
        line.summary,
    ]
