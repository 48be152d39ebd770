"""What resolution starts: the runbook's 24-hour, 3-day and 1-week checklists,
due from the resolution, and the post-mortem draft; and the reminders of the
items that come due, sent through the paging outbox like every other message
(a Notification row each: claimed once, retried, on the "Who's told" card)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ..models import (
    POST_PHASES,
    ChecklistItem,
    ChecklistTemplate,
    EventKind,
    Incident,
    PostMortem,
)
from ..paging import outbox
from ..services import create_checklists
from ..timeline import append_event
from .postmortem import draft_for


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
        create_checklists(incident, POST_PHASES, start=now)
    postmortem = PostMortem.objects.filter(incident=incident).first()
    if postmortem is None:
        postmortem = draft_for(incident, actor=actor)
        postmortem.updated_by = actor
        postmortem.save()
    return postmortem


def due_reminder_ids(now: datetime) -> list[int]:
    return list(
        ChecklistItem.objects.filter(
            phase__in=POST_PHASES,
            done_at__isnull=True,
            reminded_at__isnull=True,
            due_at__lte=now,
        ).values_list("pk", flat=True)[:500]
    )


def remind_checklist_item(item_id: int, *, now: datetime | None = None) -> list[int]:
    """Claim the item (once: a conditional UPDATE on `reminded_at`) and put its
    reminder in the outbox: a Notification row per channel (email to the
    commander, or the declarer; the incident's Slack channel; the webhook), each
    claimed once, retried and shown on the "Who's told" card. A second call finds
    nothing to claim. Returns the rows made (their delivery is queued on commit)."""
    now = now or timezone.now()
    with transaction.atomic():
        claimed = ChecklistItem.objects.filter(
            pk=item_id, reminded_at__isnull=True, done_at__isnull=True
        ).update(reminded_at=now)
        if not claimed:
            return []
        item = ChecklistItem.objects.select_related(
            "incident", "incident__commander", "incident__declared_by"
        ).get(pk=item_id)
        ids = outbox.remind(item, now=now)
        due = timezone.localtime(item.due_at) if item.due_at else now
        append_event(
            item.incident,
            EventKind.NOTIFICATION,
            f"Post-incident reminder: “{item.text}” was due {due:%Y-%m-%d %H:%M %Z} "
            f"({len(ids)} message{'s' if len(ids) != 1 else ''} queued"
            f"{'' if ids else ': nobody to tell'})",
            data={"reminder": item.pk, "phase": item.phase, "notifications": ids},
            at=now,
        )
        outbox.enqueue(ids)
    return ids


def send_due_reminders(now: datetime | None = None) -> list[int]:
    """The items reminded now (each claimed once)."""
    now = now or timezone.now()
    return [pk for pk in due_reminder_ids(now) if remind_checklist_item(pk, now=now) is not None]
