"""Action items verified by a runbook check: "Verify" re-runs the item's check,
and the item is verified only when that run passes (listening to check_finished)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from incidents.models import ActionItem, ActionItemStatus, EventKind
from incidents.services import IncidentError
from incidents.timeline import actor_name, append_event

from . import signals
from .models import CheckRun
from .services import request_check


def verify_action_item(item: ActionItem, *, actor: AbstractBaseUser) -> CheckRun:
    """Re-run the item's check; `on_check_finished` marks it verified if it passes."""
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
            f"{actor_name(actor)} asked {locked.step.key} to verify action item “{locked.text}”",
            actor=actor,
            data={"action_item": locked.pk, "run": run.pk},
        )
    item.refresh_from_db()
    return run


@receiver(signals.check_finished, sender=CheckRun, dispatch_uid="verify-action-items")
def on_check_finished(run: CheckRun, status: str, outcome: str, summary: str, **_: Any) -> None:
    """In finish_run's transaction: an action item waiting on this run is verified
    when it passed, and told why not otherwise. The worker reads with the run whether
    one waits on it (`verifies_action_item`): when none does, nothing to lock."""
    if getattr(run, "verifies_action_item", True) is False:
        return
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
