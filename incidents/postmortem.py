"""The post-incident procedure: checklists with deadlines, the post-mortem draft and
its edits, action items and their verification, checklist reminders.

Services in the house style: typed, one transaction each, a timeline event for
every change. `start_post_incident` is called by `services.transition_incident`
when an incident is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import (
    POST_PHASES,
    ActionItem,
    ActionItemStatus,
    ChecklistItem,
    ChecklistTemplate,
    EventKind,
    Incident,
    PostMortem,
    TimelineEvent,
)
from .services import IncidentError, _create_checklists, _name, append_event

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
            f"{_name(current.updated_by)} changed the "
            f"{SECTION_LABELS.get(section, section).lower()} since you opened it. "
            "Your text is kept below: merge it with theirs and save again."
        )
        self.current = current
        self.section = section


# --- the timeline section ------------------------------------------------------------


def is_postmortem_noise(event: TimelineEvent) -> bool:
    """Events about the post-incident work itself never go in the report's timeline."""
    return any(key in event.data for key in ("postmortem", "action_item", "reminder"))


def default_selected(event: TimelineEvent) -> bool:
    if is_postmortem_noise(event):
        return False
    if event.kind == EventKind.CHECK_RESULT:
        return bool(event.data.get("evidence"))
    return event.kind in MILESTONE_KINDS


def timeline_label(event: TimelineEvent, *, first_evidence: bool = False) -> str:
    """The report's wording: the template's milestones, then what the event said."""
    status = event.data.get("status") if event.kind == EventKind.STATUS else None
    prefix = {
        EventKind.DECLARED: "First alert triggered",
        EventKind.ACKNOWLEDGED: "On-call acknowledged",
        EventKind.REOPENED: "Reopened",
    }.get(event.kind) or {
        "investigating": "Investigation started",
        "mitigated": "Mitigation applied",
        "resolved": "Service restored",
        "closed": "Incident closed",
    }.get(status or "")
    if first_evidence:
        prefix = "Root cause identified"
    message = " ".join(event.message.split())
    return f"{prefix}: {message}" if prefix else message


@dataclass(frozen=True)
class TimelineLine:
    at: datetime
    text: str


def timeline_lines(events: Iterable[TimelineEvent]) -> list[TimelineLine]:
    """The chosen events as report lines; the first one with evidence is where the
    root cause was identified."""
    lines = []
    evidence_seen = False
    for event in events:
        first = (
            event.kind == EventKind.CHECK_RESULT
            and bool(event.data.get("evidence"))
            and not evidence_seen
        )
        evidence_seen = evidence_seen or first
        lines.append(TimelineLine(event.created_at, timeline_label(event, first_evidence=first)))
    return lines


def included_events(postmortem: PostMortem) -> list[TimelineEvent]:
    ids = [int(i) for i in postmortem.timeline_event_ids]
    return list(
        TimelineEvent.objects.filter(incident_id=postmortem.incident_id, pk__in=ids).order_by("id")
    )


# --- the draft -----------------------------------------------------------------------


def draft_for(incident: Incident, *, actor: AbstractBaseUser | None = None) -> PostMortem:
    """A post-mortem prefilled from what really happened (not saved)."""
    events = list(incident.timeline.order_by("id"))
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
        f"- Evidence ({', '.join(e.data['evidence'])}): {e.message}" for e in evidence
    )
    resolution = "\n".join(f"- {e.message}" for e in actions + fixes)
    users = incident.affected_users
    author = incident.commander or actor
    return PostMortem(
        incident=incident,
        title=incident.title,
        author=_name(author) if author is not None else "",
        summary=summary,
        root_cause=root_cause,
        impact_users=(
            f"{users} affected users (estimate)" if users is not None else "Not known yet"
        ),
        impact_revenue="To be assessed",
        impact_data="To be assessed",
        resolution=resolution,
        timeline_event_ids=[e.pk for e in events if default_selected(e)],
    )


def start_post_incident(
    incident: Incident, *, actor: AbstractBaseUser | None, now: datetime
) -> PostMortem:
    """On resolution (inside the transition's transaction): the 24 h / 3 day / 1 week
    checklists due from this resolution, and the post-mortem draft. Runs again on a
    re-resolution after a reopen: the lists are not duplicated (undone items are due
    again from the new resolution) and the draft, which may hold edits, is kept."""
    existing = ChecklistItem.objects.filter(incident=incident, phase__in=POST_PHASES)
    if existing.exists():
        for template in ChecklistTemplate.objects.filter(phase__in=POST_PHASES):
            if template.due_after:
                existing.filter(phase=template.phase, done_at__isnull=True).update(
                    due_at=now + template.due_after, reminded_at=None
                )
    else:
        _create_checklists(incident, POST_PHASES, start=now)
    postmortem = PostMortem.objects.filter(incident=incident).first()
    if postmortem is None:
        postmortem = draft_for(incident, actor=actor)
        postmortem.updated_by = actor
        postmortem.save()
    return postmortem


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
            f"{_name(actor)} started the post-mortem",
            actor=actor,
            data={"postmortem": ["draft"]},
        )
    return postmortem


# --- editing ---------------------------------------------------------------------------


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
            f"{_name(actor)} edited the post-mortem: {label}",
            actor=actor,
            data={"postmortem": [section], "version": current.version},
        )
    return current


# --- action items ----------------------------------------------------------------------


def add_action_item(
    incident: Incident,
    *,
    text: str,
    owner: AbstractBaseUser | None,
    due_date: date | None,
    step: Any = None,
    actor: AbstractBaseUser,
) -> ActionItem:
    text = " ".join(text.split())
    if not text:
        raise IncidentError("An action item needs a description.")
    if step is not None and step.kind != "diagnostic":
        raise IncidentError(f"{step.key} changes the platform: only a check can verify an item.")
    with transaction.atomic():
        item = ActionItem.objects.create(
            incident=incident,
            text=text[:300],
            owner=owner,
            due_date=due_date,
            step=step,
            created_by=actor,
        )
        who = f" for {_name(owner)}" if owner else ""
        due = f", due {due_date:%Y-%m-%d}" if due_date else ""
        append_event(
            incident,
            EventKind.NOTE,
            f"{_name(actor)} added action item “{item.text}”{who}{due}",
            actor=actor,
            data={"action_item": item.pk},
        )
    return item


def update_action_item(
    item: ActionItem,
    *,
    status: str,
    owner: AbstractBaseUser | None,
    due_date: date | None,
    actor: AbstractBaseUser,
) -> ActionItem:
    """Change status, owner or due date. "Verified" is earned: an item tied to a check
    is verified only by that check passing (see `verify_action_item`)."""
    if status not in ActionItemStatus.values:
        raise IncidentError(f"Unknown status {status!r}.")
    with transaction.atomic():
        locked = ActionItem.objects.select_for_update().get(pk=item.pk)
        if (
            status == ActionItemStatus.VERIFIED
            and locked.step_id
            and locked.status != ActionItemStatus.VERIFIED
        ):
            raise IncidentError("This item is verified by its check: use Verify.")
        changes = []
        if locked.status != status:
            changes.append(f"status {ActionItemStatus(status).label.lower()}")
        if locked.owner_id != (owner.pk if owner else None):
            changes.append(f"owner {_name(owner) if owner else 'nobody'}")
        if locked.due_date != due_date:
            changes.append(f"due {due_date:%Y-%m-%d}" if due_date else "no due date")
        if not changes:
            return locked
        locked.status, locked.owner, locked.due_date = status, owner, due_date
        if status != ActionItemStatus.VERIFIED:
            locked.verified_at = None
        locked.save(update_fields=["status", "owner", "due_date", "verified_at", "updated_at"])
        append_event(
            locked.incident,
            EventKind.NOTE,
            f"{_name(actor)} updated action item “{locked.text}”: {', '.join(changes)}",
            actor=actor,
            data={"action_item": locked.pk, "status": status},
        )
    return locked


def verify_action_item(item: ActionItem, *, actor: AbstractBaseUser) -> Any:
    """Re-run the item's check; `on_check_finished` marks it verified if it passes."""
    from diagnostics.services import request_check

    if item.step is None:
        raise IncidentError("This item has no check to verify it: set its status instead.")
    with transaction.atomic():
        locked = ActionItem.objects.select_for_update().get(pk=item.pk)
        if locked.verification_run_id and locked.verification_run.active:
            raise IncidentError("Its check is already running.")
        run = request_check(locked.incident, locked.step, actor=actor)[0]
        locked.verification_run = run
        locked.save(update_fields=["verification_run", "updated_at"])
        append_event(
            locked.incident,
            EventKind.NOTE,
            f"{_name(actor)} asked {locked.step.key} to verify action item “{locked.text}”",
            actor=actor,
            data={"action_item": locked.pk, "run": run.pk},
        )
    item.refresh_from_db()
    return run


def on_check_finished(run: Any, *, status: str, outcome: str, summary: str) -> None:
    """Called by diagnostics.services.finish_run, in its transaction: an action item
    waiting on this run is verified when it passed, and told why not otherwise."""
    items = ActionItem.objects.select_for_update().filter(verification_run_id=run.pk)
    for item in items:
        where = f"{run.step.key} on {run.target_name} (check run #{run.pk})"
        if status == "succeeded" and outcome == "ok":
            item.status = ActionItemStatus.VERIFIED
            item.verified_at = timezone.now()
            item.save(update_fields=["status", "verified_at", "updated_at"])
            message = f"Action item “{item.text}” verified: {where} passed: {summary}"
        else:
            message = (
                f"Action item “{item.text}” not verified: {where} {status}, "
                f"outcome {outcome or 'none'}: {summary}"
            )
        append_event(
            item.incident,
            EventKind.NOTE,
            message,
            data={
                "action_item": item.pk,
                "run": run.pk,
                "verified": item.status == ActionItemStatus.VERIFIED,
            },
        )


# --- checklist reminders ---------------------------------------------------------------


def due_reminder_ids(now: datetime) -> list[int]:
    return list(
        ChecklistItem.objects.filter(
            phase__in=POST_PHASES,
            done_at__isnull=True,
            reminded_at__isnull=True,
            due_at__lte=now,
        ).values_list("pk", flat=True)[:500]
    )


def remind_checklist_item(item_id: int, *, now: datetime | None = None) -> bool:
    """Claim the item (once: a conditional UPDATE on `reminded_at`), send its reminder
    and record it on the timeline. A second call finds nothing to claim."""
    from .reports import send_checklist_reminder

    now = now or timezone.now()
    with transaction.atomic():
        claimed = ChecklistItem.objects.filter(
            pk=item_id, reminded_at__isnull=True, done_at__isnull=True
        ).update(reminded_at=now)
        if not claimed:
            return False
        item = ChecklistItem.objects.select_related(
            "incident", "incident__commander", "incident__declared_by"
        ).get(pk=item_id)
        outcomes = send_checklist_reminder(item)
        sent = "; ".join(outcomes) if outcomes else "nobody to tell"
        append_event(
            item.incident,
            EventKind.NOTIFICATION,
            f"Post-incident reminder: “{item.text}” was due "
            f"{timezone.localtime(item.due_at):%Y-%m-%d %H:%M} ({sent})",
            data={"reminder": item.pk, "phase": item.phase},
            at=now,
        )
    return True


def send_due_reminders(now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return [pk for pk in due_reminder_ids(now) if remind_checklist_item(pk, now=now)]
