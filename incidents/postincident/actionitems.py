"""Action items of a post-mortem: added, updated, and (through a runbook check,
see diagnostics.verification) verified."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ..models import (
    ActionItem,
    ActionItemStatus,
    EventKind,
    Incident,
)
from ..services import IncidentError
from ..timeline import actor_name, append_event


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
