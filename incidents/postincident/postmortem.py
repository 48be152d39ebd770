"""The post-mortem: the runbook's incident report template, its draft prefilled
from the timeline, and its edits (a save made after someone else's to the same
section is refused, showing both texts). Services in the house style: typed, one
transaction each, a timeline event for every change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..models import (
    EventKind,
    ImpactSample,
    Incident,
    PostMortem,
    TimelineEvent,
)
from ..rules.money import format_money, format_totals
from ..services import IncidentError
from ..timeline import actor_name, append_event, lock_timeline
from .milestones import Milestones, milestones

# Sections of the report template that are written (the others come from the incident).
# section key -> the PostMortem fields it edits
SECTIONS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "author": ("author",),
    "summary": ("summary",),
    "root_cause": ("root_cause",),
    "impact": ("impact_users", "impact_revenue", "impact_data"),
    "resolution": ("resolution",),
    "lessons_learned": ("lessons_learned",),
}


SECTION_LABELS = {
    "title": "Title",
    "author": "Author",
    "summary": "Summary",
    "root_cause": "Root cause",
    "impact": "Impact",
    "resolution": "Resolution",
    "lessons_learned": "Lessons learned",
}


MAX_LENGTH = {"title": 200, "author": 150}


# Events the draft's timeline includes by default: the lifecycle, and what proved
# or changed something (check results with evidence, confirmed actions).
MILESTONE_KINDS = {
    EventKind.DECLARED,
    EventKind.ACKNOWLEDGED,
    EventKind.STATUS,
    EventKind.REOPENED,
    EventKind.SEVERITY,
    EventKind.ACTION,
}


class PostMortemConflict(IncidentError):
    """Someone else saved the same section since this editor loaded it; nothing saved."""

    def __init__(self, current: PostMortem, section: str) -> None:
        super().__init__(
            f"{actor_name(current.updated_by)} changed the "
            f"{SECTION_LABELS.get(section, section).lower()} since you opened it. "
            "Your text is kept below: merge it with theirs and save again."
        )
        self.current = current
        self.section = section


def is_postmortem_noise(event: TimelineEvent) -> bool:
    """Events about the post-incident work itself never go in the report's timeline,
    nor the milestone marks (the marked event goes, with its milestone)."""
    return any(key in event.data for key in ("postmortem", "action_item", "reminder", "milestone"))


def is_first_alert(event: TimelineEvent) -> bool:
    """The alert that declared the incident (alerts.services marks its event)."""
    return event.kind == EventKind.ALERT and bool(event.data.get("first"))


def declared_by_alert(event: TimelineEvent) -> bool:
    return event.kind == EventKind.DECLARED and bool(event.data.get("alert_fingerprint"))


def default_selected(event: TimelineEvent) -> bool:
    if is_postmortem_noise(event):
        return False
    if is_first_alert(event):
        return True
    if event.kind == EventKind.CHECK_RESULT:
        return bool(event.data.get("evidence"))
    return event.kind in MILESTONE_KINDS


def timeline_label(event: TimelineEvent, milestone_labels: list[str] | None = None) -> str:
    """The report's wording: the template's milestones, then what the event said.

    "First alert triggered" is the alert's own event (at its start time) when an alert
    declared the incident, and the declaration is then a row of its own; a person's
    declaration is where the template's timeline starts otherwise."""
    message = " ".join(event.message.split())
    if is_first_alert(event):
        return message if message.startswith("First alert") else f"First alert triggered: {message}"
    if declared_by_alert(event):
        return f"Incident declared: {message}"
    status = event.data.get("status") if event.kind == EventKind.STATUS else None
    prefix = {
        EventKind.DECLARED: "First alert triggered",
        EventKind.ACKNOWLEDGED: "On-call acknowledged",
        EventKind.REOPENED: "Reopened",
    }.get(event.kind) or {
        "investigating": "Investigation started",
        "mitigated": "Status set to mitigated",
        "resolved": "Service restored",
        "closed": "Incident closed",
    }.get(status or "")
    if milestone_labels:
        prefix = " / ".join(milestone_labels)
    return f"{prefix}: {message}" if prefix else message


@dataclass(frozen=True)
class TimelineLine:
    at: datetime
    text: str


def timeline_lines(
    events: Iterable[TimelineEvent], found: Milestones | None = None
) -> list[TimelineLine]:
    """The chosen events as report lines, each milestone (see milestones.py) named:
    `found` from the incident's whole timeline (by default, from `events` alone)."""
    events = list(events)
    found = found if found is not None else milestones(events)
    return [
        TimelineLine(event.created_at, timeline_label(event, found.labels(event.pk)))
        for event in events
    ]


def marked_by_hand(found: Milestones) -> set[int]:
    return {pk for pk, marks in found.marked.items() if marks}


def report_events(postmortem: PostMortem) -> tuple[list[TimelineEvent], Milestones]:
    """The events the report's timeline shows (the chosen ones, and every event marked
    as a milestone by hand) and the incident's milestones, from one query."""
    everything = list(
        TimelineEvent.objects.filter(incident_id=postmortem.incident_id).order_by(
            "created_at", "id"
        )
    )
    found = milestones(everything)
    ids = {int(i) for i in postmortem.timeline_event_ids} | marked_by_hand(found)
    return [e for e in everything if e.pk in ids], found


def included_events(postmortem: PostMortem) -> list[TimelineEvent]:
    return report_events(postmortem)[0]


def draft_for(incident: Incident, *, actor: AbstractBaseUser | None = None) -> PostMortem:
    """A post-mortem prefilled from what really happened (not saved)."""
    # In time order: the alert that declared an incident started before the declaration
    # (its event is written after it, at the alert's start time).
    events = list(incident.timeline.order_by("created_at", "id"))
    found = milestones(events)
    by_hand = marked_by_hand(found)
    evidence = [e for e in events if e.kind == EventKind.CHECK_RESULT and e.data.get("evidence")]
    actions = [e for e in events if e.kind == EventKind.ACTION]
    fixes = [
        e
        for e in events
        if e.kind == EventKind.STATUS
        and e.data.get("status") in ("mitigated", "resolved")
        and ": " in e.message
    ]
    services = ", ".join(incident.impacted_services) or "no service named"
    summary = incident.summary or (
        f"{incident.severity.key} {incident.get_category_display().lower()} incident "
        f"“{incident.title}”, affecting {services}."
    )
    root_cause = "\n".join(
        [f"- Evidence ({', '.join(e.data['evidence'])}): {e.message}" for e in evidence]
        + [
            f"- Marked as the root cause: {' '.join(e.message.split())}"
            for e in events
            if e.pk in by_hand and e.pk in found.events["root_cause"] and e not in evidence
        ]
    )
    resolution = "\n".join(
        [f"- {e.message}" for e in actions + fixes]
        + [
            f"- Marked as the mitigation: {' '.join(e.message.split())}"
            for e in events
            if e.pk in by_hand and e.pk in found.events["mitigation"] and e not in actions + fixes
        ]
    )
    author = incident.commander or actor
    impact_users, impact_revenue, impact_data = draft_impact(incident)
    return PostMortem(
        incident=incident,
        title=incident.title,
        author=actor_name(author) if author is not None else "",
        summary=summary,
        root_cause=root_cause,
        impact_users=impact_users,
        impact_revenue=impact_revenue,
        impact_data=impact_data,
        resolution=resolution,
        timeline_event_ids=[e.pk for e in events if default_selected(e) or e.pk in by_hand],
    )


def _at(value: datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M %Z}"


def _per(rows: list[dict[str, Any]], key: str) -> str:
    parts = [
        f"{r[key]} {format_money(int(r['long']), r['currency'])} ({r['long_count']})"
        for r in rows
        if r.get("long_count")
    ]
    return "; ".join(parts[:20]) or "none"


def draft_impact(incident: Incident, *, without: int | None = None) -> tuple[str, str, str]:
    """The draft's Impact section (users, revenue, data): measured when the incident
    has money-at-risk readings (all but the sample `without`), else the estimate."""
    users = incident.affected_users
    measured = measured_impact(incident, without=without)
    if measured is None:
        estimate = f"{users} affected users (estimate)" if users is not None else "Not known yet"
        return estimate, "To be assessed", "To be assessed"
    estimate = f"\n{users} affected users (estimate at declaration)" if users is not None else ""
    return measured[0] + estimate, measured[1], measured[2]


def measured_impact(
    incident: Incident, *, without: int | None = None
) -> tuple[str, str, str] | None:
    """The Impact section (users, revenue, data) from the money-at-risk readings of the
    incident up to its resolution: the peak reading (most plays pending over the
    runbook's hour) and the reading at resolution (taken by a worker when the incident
    was resolved), with where the numbers came from. Without a good reading at
    resolution, the figure is the last reading before it, said so with its time (and
    why the reading at resolution is missing). None when nothing was measured."""
    end = incident.resolved_at
    rows = ImpactSample.objects.filter(incident=incident).order_by("taken_at", "pk")
    if without is not None:
        rows = rows.exclude(pk=without)
    everything = list(rows)
    at_resolution = None
    if end is not None:  # what was read after the resolution is not this incident's impact
        at_resolution = next((s for s in everything if s.for_resolution == end), None)
        everything = [s for s in everything if s.taken_at <= end or s is at_resolution]
    samples = [s for s in everything if s.ok]
    if not samples:
        return None
    peak = max(samples, key=lambda s: (s.plays_long, s.plays_short, -s.taken_at.timestamp()))
    last = samples[-1]
    w, short = peak.window_minutes, peak.short_window_minutes
    if end is None:
        at_end = f"at the last reading ({_at(last.taken_at)})"
    elif at_resolution is not None and at_resolution.ok:
        at_end = f"at resolution (read {_at(last.taken_at)})"
    else:
        why = (
            f"the reading at resolution failed: {at_resolution.error[:200]}"
            if at_resolution is not None
            else "no reading was taken at resolution"
        )
        at_end = f"at the last reading before resolution ({_at(last.taken_at)}; {why})"
    targets = sorted({s.target_name for s in samples if s.target_name})
    source = (
        f"Source: {peak.probe} (runbook step {peak.step_key}) on {', '.join(targets) or '?'}, "
        f"{len(samples)} readings from {_at(samples[0].taken_at)} to {_at(samples[-1].taken_at)}."
    )
    users = (
        f"{peak.users_long} players with plays pending over {w} min at the peak "
        f"({_at(peak.taken_at)}; {peak.users_short} over {short} min); "
        f"{last.users_long} {at_end}. {source}"
    )
    revenue = (
        f"Money at risk (plays pending over {w} min): peak {format_totals(peak.long_totals())} "
        f"at {_at(peak.taken_at)}; {format_totals(last.long_totals())} {at_end}. "
        f"Over {short} min at the peak: "
        f"{format_totals(peak.short_totals())}. Per banca at the peak: "
        f"{_per(peak.by_banca, 'banca')}. {source}"
    )
    data = (
        f"{peak.plays_long} plays pending over {w} min at the peak ({_at(peak.taken_at)}), "
        f"{peak.plays_short} over {short} min; {last.plays_long} {at_end}. Per Stripe state "
        f"at the peak: {_per(peak.by_state, 'state')}. {source}"
    )
    return users, revenue, data


def redraw_impact(incident: Incident, sample: ImpactSample) -> bool:
    """The reading at resolution (`sample`) landed after the draft was written, in the
    resolving transaction: redraw the draft's Impact section with it, unless someone
    edited that section since (their text stays as they wrote it). A timeline note
    says so; the version moves, so an editor who loaded the old text is told."""
    with transaction.atomic():
        lock_timeline(incident.pk)
        fresh = Incident.objects.select_related("severity").get(pk=incident.pk)
        if fresh.resolved_at is None or fresh.resolved_at != sample.for_resolution:
            return False
        postmortem = PostMortem.objects.select_for_update().filter(incident=fresh).first()
        if postmortem is None:
            return False
        drawn = (postmortem.impact_users, postmortem.impact_revenue, postmortem.impact_data)
        after = draft_impact(fresh)
        if drawn != draft_impact(fresh, without=sample.pk) or drawn == after:
            return False
        postmortem.impact_users, postmortem.impact_revenue, postmortem.impact_data = after
        postmortem.version += 1
        postmortem.updated_at = timezone.now()
        postmortem.updated_by = None
        postmortem.save(
            update_fields=[
                "impact_users",
                "impact_revenue",
                "impact_data",
                "version",
                "updated_at",
                "updated_by",
            ]
        )
        reading = (
            "the reading at resolution" if sample.ok else "why the reading at resolution failed"
        )
        append_event(
            fresh,
            EventKind.NOTE,
            f"LotoOps redrew the post-mortem's impact with {reading}",
            data={"postmortem": ["impact"], "version": postmortem.version, "sample": sample.pk},
        )
    return True


def ensure_postmortem(incident: Incident, *, actor: AbstractBaseUser) -> PostMortem:
    """The incident's post-mortem, drafting it if an older incident has none."""
    with transaction.atomic():
        Incident.objects.select_for_update().filter(pk=incident.pk).first()
        postmortem = PostMortem.objects.filter(incident=incident).first()
        if postmortem is not None:
            return postmortem
        if incident.resolved_at is None:
            raise IncidentError("The post-mortem starts when the incident is resolved.")
        postmortem = draft_for(incident, actor=actor)
        postmortem.updated_by = actor
        postmortem.save()
        append_event(
            incident,
            EventKind.NOTE,
            f"{actor_name(actor)} started the post-mortem",
            actor=actor,
            data={"postmortem": ["draft"]},
        )
    return postmortem


def save_section(
    postmortem: PostMortem,
    section: str,
    values: dict[str, str],
    *,
    version: int,
    original: dict[str, str],
    actor: AbstractBaseUser,
) -> PostMortem:
    """Save one section. Conditional UPDATE: it applies when nobody saved since the
    editor loaded `version`, or when this section still holds the text the editor
    loaded (someone saved another section meanwhile). Otherwise PostMortemConflict,
    with the stored row, and nothing is written."""
    fields = SECTIONS.get(section)
    if fields is None:
        raise IncidentError(f"Unknown section {section!r}.")
    clean = {f: (values.get(f) or "").strip() for f in fields}
    if section == "title" and not clean["title"]:
        raise IncidentError("The report needs a title.")
    for field in fields:
        limit = MAX_LENGTH.get(field)
        if limit and len(clean[field]) > limit:
            raise IncidentError(f"{SECTION_LABELS[section]} is longer than {limit} characters.")
    unchanged = Q()
    for field in fields:
        unchanged &= Q(**{field: original.get(field, "")})
    return _conditional_save(postmortem, section, clean, version, unchanged, actor)


def save_timeline_selection(
    postmortem: PostMortem,
    event_ids: Iterable[int],
    *,
    version: int,
    original: list[int],
    actor: AbstractBaseUser,
) -> PostMortem:
    """Choose which timeline events the report shows (only the incident's own)."""
    wanted = set(event_ids)
    ids = sorted(
        TimelineEvent.objects.filter(incident_id=postmortem.incident_id, pk__in=wanted).values_list(
            "pk", flat=True
        )
    )
    if len(ids) != len(wanted):
        raise IncidentError("Some of the chosen events are not on this incident's timeline.")
    unchanged = Q(timeline_event_ids=sorted(original))
    return _conditional_save(
        postmortem, "timeline", {"timeline_event_ids": ids}, version, unchanged, actor
    )


def _conditional_save(
    postmortem: PostMortem,
    section: str,
    values: dict[str, Any],
    version: int,
    unchanged: Q,
    actor: AbstractBaseUser,
) -> PostMortem:
    now = timezone.now()
    with transaction.atomic():
        saved = PostMortem.objects.filter(
            Q(pk=postmortem.pk) & (Q(version=version) | unchanged)
        ).update(**values, version=F("version") + 1, updated_at=now, updated_by=actor)
        current = PostMortem.objects.select_related("updated_by").get(pk=postmortem.pk)
        if not saved:
            raise PostMortemConflict(current, section)
        label = "timeline selection" if section == "timeline" else SECTION_LABELS[section].lower()
        append_event(
            current.incident,
            EventKind.NOTE,
            f"{actor_name(actor)} edited the post-mortem: {label}",
            actor=actor,
            data={"postmortem": [section], "version": current.version},
        )
    return current
