"""A second person for dangerous actions, on top of `actions.py`.

An action needs approval when its step is marked `requires_approval` or its
incident's severity is in `ACTION_APPROVAL_SEVERITIES` (P0 and P1 by default).
Confirming such an action spends the confirmation (single use, as always) and
records a request with the exact plan, target and parameters confirmed; nothing
queues. A different user with the approve permission (`diagnostics.approve_actions`
for every incident, or `incidents.approve_actions` granted on the incident with
django-guardian) approves, which queues exactly that plan once, or rejects it. A
request not decided within `ACTION_APPROVAL_MAX_AGE` seconds expires and never runs.
Every step is on the incident's timeline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from incidents.access import can_view
from incidents.models import EventKind, Incident
from incidents.timeline import actor_name, append_event

from . import actions, services
from .models import ActionApproval, ApprovalStatus, CheckRun, RunbookStep

APPROVE_EVERY_INCIDENT = "diagnostics.approve_actions"
APPROVE_THIS_INCIDENT = "incidents.approve_actions"  # guardian, per incident


class ApprovalError(services.CheckError):
    """An approval that cannot be given or asked for as asked; nothing was changed."""


def required(incident: Incident, step: RunbookStep) -> bool:
    return step.requires_approval or incident.severity.key in settings.ACTION_APPROVAL_SEVERITIES


def can_approve(user: AbstractBaseUser | AnonymousUser, incident: Incident) -> bool:
    """May approve or reject actions on this incident (never their own request)."""
    if not can_view(user, incident):
        return False
    return (
        user.has_perm(APPROVE_EVERY_INCIDENT)
        or user.has_perm(APPROVE_THIS_INCIDENT)
        or user.has_perm(APPROVE_THIS_INCIDENT, incident)
    )


def pending(incident: Incident, now: datetime | None = None) -> list[ActionApproval]:
    """The requests still open for a decision, oldest first."""
    now = now or timezone.now()
    return list(
        incident.action_approvals.filter(status=ApprovalStatus.PENDING, expires_at__gt=now)
        .select_related("step", "requested_by")
        .order_by("id")
    )


def confirm_or_request(
    incident: Incident, step: RunbookStep, token: str, *, actor: AbstractBaseUser
) -> CheckRun | ActionApproval:
    """What confirming an action does: queue it, or ask for approval when it needs one."""
    if required(incident, step):
        return request_approval(incident, step, token, actor=actor)
    return actions.confirm(incident, step, token, actor=actor)


def request_approval(
    incident: Incident, step: RunbookStep, token: str, *, actor: AbstractBaseUser
) -> ActionApproval:
    """Spend the confirmation and record the request with its exact plan."""
    data, target = actions.checked(incident, step, token)
    if not incident.is_open:
        raise ApprovalError("The incident is not open: reopen it before changing the platform.")
    now = timezone.now()
    with transaction.atomic():
        actions.consume(data, incident, step, actor=actor)
        approval = ActionApproval.objects.create(
            incident=incident,
            step=step,
            target=target,
            target_name=target.name,
            params=data["params"],
            plan=data["plan"],
            requested_by=actor,
            requested_at=now,
            expires_at=now + timedelta(seconds=settings.ACTION_APPROVAL_MAX_AGE),
        )
        append_event(
            incident,
            EventKind.ACTION,
            f"{actor_name(actor)} asked for approval to run {step.key}: {approval.plan} "
            f"(request #{approval.pk})",
            actor=actor,
            data=_data(approval, "requested"),
        )
    return approval


def approve(approval: ActionApproval, *, actor: AbstractBaseUser) -> CheckRun:
    """Queue exactly the requested plan, once; the request records who approved it."""
    expire_due()
    with transaction.atomic():
        locked = _decidable(approval, actor)
        if locked.target is None or not locked.target.active:
            raise ApprovalError("The action's target is gone or inactive: it cannot run.")
        run = services.run_action(
            locked.incident,
            locked.step,
            actor=actor,
            target=locked.target,
            params=locked.params,
            plan=locked.plan,
        )
        CheckRun.objects.filter(pk=run.pk).update(requested_by=locked.requested_by)
        _decide(locked, ApprovalStatus.APPROVED, actor, run=run)
        append_event(
            locked.incident,
            EventKind.ACTION,
            f"{actor_name(actor)} approved request #{locked.pk} by "
            f"{actor_name(locked.requested_by)} for {locked.step.key}: {locked.plan} "
            f"(check run #{run.pk})",
            actor=actor,
            data=_data(locked, "approved") | {"run": run.pk},
        )
    return run


def reject(approval: ActionApproval, *, actor: AbstractBaseUser, reason: str = "") -> None:
    """Refuse the request: it never runs."""
    reason = " ".join(reason.split())[:500]
    expire_due()
    with transaction.atomic():
        locked = _decidable(approval, actor)
        _decide(locked, ApprovalStatus.REJECTED, actor, reason=reason)
        append_event(
            locked.incident,
            EventKind.ACTION,
            f"{actor_name(actor)} rejected request #{locked.pk} by "
            f"{actor_name(locked.requested_by)} for {locked.step.key}: {locked.plan}"
            + (f" ({reason})" if reason else ""),
            actor=actor,
            data=_data(locked, "rejected"),
        )


def expire_due(now: datetime | None = None) -> list[int]:
    """Mark the undecided requests past their age as expired (each once, on its timeline)."""
    now = now or timezone.now()
    expired: list[int] = []
    due = ActionApproval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
    for approval in due.select_related("incident", "step", "requested_by"):
        with transaction.atomic():
            done = ActionApproval.objects.filter(
                pk=approval.pk, status=ApprovalStatus.PENDING
            ).update(status=ApprovalStatus.EXPIRED, decided_at=now)
            if not done:
                continue
            append_event(
                approval.incident,
                EventKind.ACTION,
                f"Request #{approval.pk} by {actor_name(approval.requested_by)} for "
                f"{approval.step.key} expired without a decision: it will not run",
                data=_data(approval, "expired"),
            )
        expired.append(approval.pk)
    return expired


def _decidable(approval: ActionApproval, actor: AbstractBaseUser) -> ActionApproval:
    """The request, locked, if `actor` may decide it now (call inside a transaction)."""
    locked = (
        ActionApproval.objects.select_for_update(of=("self",))
        # Not decided_by: a joined row is read as it was before the lock was
        # granted, the locked row as it is after (the decider of a concurrent approval).
        .select_related("incident__severity", "step", "target", "requested_by")
        .get(pk=approval.pk)
    )
    if locked.requested_by_id == actor.pk:
        raise ApprovalError("You asked for this action: another person must approve it.")
    if not can_approve(actor, locked.incident):
        raise ApprovalError("You may not approve actions on this incident.")
    if locked.status != ApprovalStatus.PENDING:
        raise ApprovalError(_already(locked))
    if locked.expired():
        raise ApprovalError(f"Request #{locked.pk} expired: it will not run. Ask again.")
    return locked


def _already(approval: ActionApproval) -> str:
    if approval.status == ApprovalStatus.EXPIRED:
        return f"Request #{approval.pk} expired: it will not run. Ask again."
    who = actor_name(approval.decided_by)
    if approval.status == ApprovalStatus.APPROVED:
        return (
            f"Request #{approval.pk} was already approved by {who}: "
            f"the action ran as check run #{approval.run_id}."
        )
    return f"Request #{approval.pk} was already rejected by {who}: it will not run."


def _decide(
    approval: ActionApproval,
    status: str,
    actor: AbstractBaseUser,
    *,
    run: CheckRun | None = None,
    reason: str = "",
) -> None:
    approval.status, approval.decided_by, approval.decided_at = status, actor, timezone.now()
    approval.run, approval.reason = run, reason
    approval.save(update_fields=["status", "decided_by", "decided_at", "run", "reason"])


def _data(approval: ActionApproval, decision: str) -> dict[str, Any]:
    return {
        "approval": approval.pk,
        "decision": decision,
        "step": approval.step.key,
        "plan": approval.plan,
        "target": approval.target_name,
    }
