"""The post-mortem's milestones: when the root cause was identified and when the
mitigation was applied.

A responder marks any timeline event (a note, a log line found, an action, a check
result) as one or the other; the mark, and its undoing, are timeline events of their
own (the timeline is append-only), written through `timeline.append_event`:

    data = {"milestone": "root_cause", "marks": <event id>}                 # marked
    data = {"milestone": "root_cause", "marks": <event id>, "undo": <mark>} # undone

Without a mark, the milestones come from what the incident recorded, as before: the
first check result with evidence is where the root cause was identified, the status
change to "mitigated" is where the mitigation was applied. A mark by hand wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ..models import EventKind, Incident, TimelineEvent
from ..services import IncidentError
from ..timeline import actor_name, append_event

ROOT_CAUSE, MITIGATION = "root_cause", "mitigation"
LABELS = {ROOT_CAUSE: "Root cause identified", MITIGATION: "Mitigation applied"}


def is_mark(event: TimelineEvent) -> bool:
    return "milestone" in event.data


@dataclass
class Milestones:
    """Which events are which milestone, for one incident."""

    # event id -> the milestones marked on it by hand, and the id of each mark
    marked: dict[int, dict[str, int]] = field(default_factory=dict)
    # milestone -> the event ids that are it (by hand, or from the record), in order
    events: dict[str, list[int]] = field(default_factory=dict)
    at: dict[int, datetime] = field(default_factory=dict)

    def labels(self, event_id: int) -> list[str]:
        return [LABELS[m] for m in (ROOT_CAUSE, MITIGATION) if event_id in self.events.get(m, [])]

    def first(self, milestone: str) -> datetime | None:
        times = [self.at[pk] for pk in self.events.get(milestone, [])]
        return min(times) if times else None

    def ids(self) -> set[int]:
        return {pk for ids in self.events.values() for pk in ids}

    def active_mark(self, event_id: int, milestone: str) -> int | None:
        return self.marked.get(event_id, {}).get(milestone)


def milestones(events: Iterable[TimelineEvent]) -> Milestones:
    """The milestones of an incident from its timeline (all of it, in id order)."""
    result = Milestones()
    evidence: list[int] = []
    mitigated: list[int] = []
    for event in events:
        result.at[event.pk] = event.created_at
        data = event.data
        if is_mark(event):
            target, kind = data.get("marks"), data.get("milestone")
            if not isinstance(target, int) or kind not in LABELS:
                continue
            marks = result.marked.setdefault(target, {})
            if "undo" in data:
                if marks.get(kind) == data["undo"]:
                    del marks[kind]
            else:
                marks[kind] = event.pk
        elif event.kind == EventKind.CHECK_RESULT and data.get("evidence"):
            evidence.append(event.pk)
        elif event.kind == EventKind.STATUS and data.get("status") == "mitigated":
            mitigated.append(event.pk)
    by_hand = {
        kind: [pk for pk, marks in sorted(result.marked.items()) if kind in marks]
        for kind in LABELS
    }
    result.events = {
        ROOT_CAUSE: by_hand[ROOT_CAUSE] or evidence[:1],
        MITIGATION: by_hand[MITIGATION] or mitigated[:1],
    }
    return result


def incident_milestones(incident: Incident) -> Milestones:
    return milestones(incident.timeline.order_by("id"))


@dataclass(frozen=True)
class KeyTime:
    label: str
    at: datetime | None
    after: timedelta | None


def key_times(incident: Incident, found: Milestones) -> list[KeyTime]:
    """Time from the first alert (the declaration) to each milestone."""
    out = []
    for kind in (ROOT_CAUSE, MITIGATION):
        at = found.first(kind)
        out.append(KeyTime(LABELS[kind], at, at - incident.declared_at if at else None))
    return out


def _lock(incident: Incident) -> None:
    """Marks and undos of one incident one at a time (a replayed POST waits, then sees
    the first one's mark and changes nothing)."""
    list(Incident.objects.select_for_update(no_key=True).filter(pk=incident.pk).values("pk"))


def _quote(event: TimelineEvent) -> str:
    text = " ".join(event.message.split())
    return text if len(text) <= 80 else text[:79] + "…"


def mark(
    incident: Incident, event_id: int, milestone: str, *, actor: AbstractBaseUser
) -> TimelineEvent:
    """Mark one of the incident's events as a milestone. Refused (nothing written)
    for an unknown milestone, an event of another incident, a mark itself, or an
    event that already carries that mark."""
    if milestone not in LABELS:
        raise IncidentError("Choose “root cause identified” or “mitigation applied”.")
    with transaction.atomic():
        _lock(incident)
        target = TimelineEvent.objects.filter(incident_id=incident.pk, pk=event_id).first()
        if target is None:
            raise IncidentError("That event is not on this incident's timeline.")
        if is_mark(target):
            raise IncidentError("A milestone mark cannot itself be marked: mark the event.")
        if incident_milestones(incident).active_mark(target.pk, milestone):
            raise IncidentError(
                f"That event is already marked “{LABELS[milestone].lower()}”: nothing changed."
            )
        when = f"{timezone.localtime(target.created_at):%H:%M}"
        return append_event(
            incident,
            EventKind.NOTE,
            f"{actor_name(actor)} marked “{_quote(target)}” ({when}) as "
            f"{LABELS[milestone].lower()}",
            actor=actor,
            data={"milestone": milestone, "marks": target.pk},
        )


def undo(incident: Incident, mark_id: int, *, actor: AbstractBaseUser) -> TimelineEvent:
    """Take back a mark (a new event says so). Refused when it is no mark of this
    incident, or no longer in force (already undone)."""
    with transaction.atomic():
        _lock(incident)
        marking = TimelineEvent.objects.filter(incident_id=incident.pk, pk=mark_id).first()
        if marking is None or not is_mark(marking) or "undo" in marking.data:
            raise IncidentError("That is not a milestone mark on this incident's timeline.")
        milestone, target_id = marking.data["milestone"], marking.data["marks"]
        if incident_milestones(incident).active_mark(target_id, milestone) != marking.pk:
            raise IncidentError("That mark was already undone: nothing changed.")
        target = TimelineEvent.objects.get(pk=target_id)
        return append_event(
            incident,
            EventKind.NOTE,
            f"{actor_name(actor)} undid the mark: “{_quote(target)}” is no longer "
            f"{LABELS[milestone].lower()}",
            actor=actor,
            data={"milestone": milestone, "marks": target_id, "undo": marking.pk},
        )
