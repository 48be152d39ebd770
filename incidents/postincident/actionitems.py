"""Action items of a post-mortem: added, updated, and (through a runbook check,
see diagnostics.verification) verified.

"Verified" means a check proved the fix; it is never set by hand. An item without a
check is closed by hand as "Done" (and shows so). A due date falls between the day
the incident was declared and MAX_YEARS_AHEAD years from today."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ..models import (
    ActionItem,
    ActionItemStatus,
    EventKind,
    Incident,
)
from ..services import IncidentError
from ..timeline import actor_name, append_event

MAX_YEARS_AHEAD = 5


def due_date_range(incident: Incident, today: date | None = None) -> tuple[date, date]:
    """The due dates an item of `incident` may have: from the day it was declared
    (in the site's zone) to MAX_YEARS_AHEAD years from today."""
    today = today or timezone.localdate()
    earliest = timezone.localtime(incident.declared_at).date()
    return min(earliest, today), today + timedelta(days=365 * MAX_YEARS_AHEAD + 1)


def check_due_date(incident: Incident, due_date: date | None) -> None:
    """A due date before the incident existed (1900-01-01) or absurdly far away is a
    typo: refused with the range that is accepted."""
    if due_date is None:
        return
    earliest, latest = due_date_range(incident)
    if due_date < earliest:
        raise IncidentError(
            f"Due date {due_date:%Y-%m-%d} is before the incident was declared "
            f"({earliest:%Y-%m-%d}): pick a day from {earliest:%Y-%m-%d} to {latest:%Y-%m-%d}."
        )
    if due_date > latest:
        raise IncidentError(
            f"Due date {due_date:%Y-%m-%d} is more than {MAX_YEARS_AHEAD} years away: "
            f"pick a day from {earliest:%Y-%m-%d} to {latest:%Y-%m-%d}."
        )


def verify_by_hand_refusal(has_check: bool) -> str:
    if has_check:
        return "This item is verified by its check: use Verify."
    return (
        "Only a passing check can mark an item Verified, and this item has none: "
        "mark it Done (closed by hand), or add an item tied to a check."
    )


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
    check_due_date(incident, due_date)
    with transaction.atomic():
        item = ActionItem.objects.create(
            incident=incident,
            text=text[:300],
            owner=owner,
            due_date=due_date,
            step=step,
            created_by=actor,
        )
        who = f" for {actor_name(owner)}" if owner else ""
        due = f", due {due_date:%Y-%m-%d}" if due_date else ""
        append_event(
            incident,
            EventKind.NOTE,
            f"{actor_name(actor)} added action item “{item.text}”{who}{due}",
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
    """Change status, owner or due date. "Verified" is earned: only a check passing
    verifies an item (see diagnostics.verification); by hand, an item is Done. A
    due date out of range is refused, unless it is the one the item already has."""
    if status not in ActionItemStatus.values:
        raise IncidentError(f"Unknown status {status!r}.")
    with transaction.atomic():
        locked = ActionItem.objects.select_for_update().get(pk=item.pk)
        if status == ActionItemStatus.VERIFIED and locked.status != ActionItemStatus.VERIFIED:
            raise IncidentError(verify_by_hand_refusal(bool(locked.step_id)))
        if due_date != locked.due_date:
            check_due_date(locked.incident, due_date)
        changes = []
        if locked.status != status:
            changes.append(f"status {ActionItemStatus(status).label.lower()}")
        if locked.owner_id != (owner.pk if owner else None):
            changes.append(f"owner {actor_name(owner) if owner else 'nobody'}")
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
            f"{actor_name(actor)} updated action item “{locked.text}”: {', '.join(changes)}",
            actor=actor,
            data={"action_item": locked.pk, "status": status},
        )
    return locked
