"""A second person for dangerous actions, on top of `actions.py`.

An action needs approval when its step is marked `requires_approval` or its
incident was of a severity in `ACTION_APPROVAL_SEVERITIES` (P0 and P1 by default)
at any moment since it was declared (or within the last
`ACTION_APPROVAL_SEVERITY_WINDOW` seconds, when that is set): the severity history
is read from the timeline, so lowering the severity for a moment never skips the
second person. The decision is taken under the incident's row lock, the lock a
severity change takes, so a change racing the confirmation lands wholly before it
(and counts) or after it.

Confirming such an action spends the confirmation (single use, as always) and
records a request with the exact plan, target and parameters confirmed, bound (a
signed fingerprint) to the step's probe and the target's address as they were;
nothing queues. A different user with the approve permission
(`diagnostics.approve_actions` for every incident, or `incidents.approve_actions`
granted on the incident with django-guardian) approves, which queues exactly that
plan once, or rejects it. If the request, the step or the target changed since it
was asked, approving voids it instead (it never runs; the page says what changed).
A request not decided within `ACTION_APPROVAL_MAX_AGE` seconds expires and never
runs. Every step is on the incident's timeline."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from incidents.access import can_view
from incidents.models import EventKind, Incident
from incidents.timeline import actor_name, append_event, lock_timeline

from . import actions, services
from .models import ActionApproval, ApprovalStatus, CheckRun, RunbookStep, Target

APPROVE_EVERY_INCIDENT = "diagnostics.approve_actions"
APPROVE_THIS_INCIDENT = "incidents.approve_actions"  # guardian, per incident
BINDING_SALT = "lotoops.action-approval"


class ApprovalError(services.CheckError):
    """An approval that cannot be given or asked for as asked; nothing was changed."""


def required(incident: Incident, step: RunbookStep, now: datetime | None = None) -> bool:
    """Whether confirming this action asks a second person: a step marked so, or an
    incident that was of an approval severity at any moment of the window (lowering
    the severity never removes the need). Reads the incident's row and timeline as
    they are now, not the caller's copy."""
    if step.requires_approval:
        return True
    return bool(severities_held(incident, now) & set(settings.ACTION_APPROVAL_SEVERITIES))


def severities_held(incident: Incident, now: datetime | None = None) -> set[str]:
    """Every severity the incident held at some moment since its declaration, or
    since `ACTION_APPROVAL_SEVERITY_WINDOW` seconds ago when that is set (a severity
    left before then no longer counts): its current one and, from the timeline, the
    one each severity change left, when it left it inside the window."""
    now = now or timezone.now()
    held = set(Incident.objects.filter(pk=incident.pk).values_list("severity__key", flat=True))
    events = incident.timeline.filter(kind__in=[EventKind.DECLARED, EventKind.SEVERITY])
    window = settings.ACTION_APPROVAL_SEVERITY_WINDOW
    if window > 0:
        events = events.filter(created_at__gte=now - timedelta(seconds=window))
    for kind, data in events.values_list("kind", "data"):
        key = data.get("from") if kind == EventKind.SEVERITY else None
        if kind == EventKind.DECLARED and window <= 0:
            key = data.get("severity")
        if isinstance(key, str):
            held.add(key)
    return held


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
    """The requests still open for a decision, oldest first; each with `changed`,
    what changed since it was asked ("" when nothing did: approving it would void it)."""
    now = now or timezone.now()
    found = list(
        incident.action_approvals.filter(status=ApprovalStatus.PENDING, expires_at__gt=now)
        .select_related("step", "requested_by", "target")
        .order_by("id")
    )
    for approval in found:
        approval.changed = changes(approval)
    return found


def confirm_or_request(
    incident: Incident, step: RunbookStep, token: str, *, actor: AbstractBaseUser
) -> CheckRun | ActionApproval:
    """What confirming an action does: queue it, or ask for approval when it needs one.

    Decided under the incident's row lock (the one a severity change takes), on the
    incident as it is then: a severity raised while the responder confirmed is seen."""
    with transaction.atomic():
        lock_timeline(incident.pk)
        current = Incident.objects.select_related("severity").get(pk=incident.pk)
        if required(current, step):
            return request_approval(current, step, token, actor=actor)
        return actions.confirm(current, step, token, actor=actor)


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
        approval = ActionApproval(
            incident=incident,
            step=step,
            target=target,
            target_name=target.name,
            params=data["params"],
            plan=data["plan"],
            binding=actions.binding(step, target),
            requested_by=actor,
            requested_at=now,
            expires_at=now + timedelta(seconds=settings.ACTION_APPROVAL_MAX_AGE),
        )
        approval.signature = _signature(approval)
        approval.save()
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
        # The target as it is now, locked until the run is queued: an edit made
        # meanwhile waits, one made before is seen (and voids the request).
        locked.target = Target.objects.select_for_update().filter(pk=locked.target_id).first()
        if locked.target is None or not locked.target.active:
            raise ApprovalError("The action's target is gone or inactive: it cannot run.")
        if changed := changes(locked):
            void = _void(locked, changed, actor)
        else:
            void, run = "", _queue(locked, actor)
    if void:  # the request is void (committed above): this approval queues nothing
        raise ApprovalError(void)
    return run


def _queue(locked: ActionApproval, actor: AbstractBaseUser) -> CheckRun:
    """Queue the request's exact plan (inside approve's transaction)."""
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
    if approval.status == ApprovalStatus.VOID:
        return _void_message(approval.pk, approval.reason)
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


# --- what the approver sees is what runs ---------------------------------------------


def _signature(approval: ActionApproval) -> str:
    """An HMAC (SECRET_KEY) over everything the approver is shown and what runs, so
    a request edited in the database after it was asked is recognised."""
    signed = {
        "incident": approval.incident_id,
        "step": approval.step_id,
        "target": approval.target_id,
        "target_name": approval.target_name,
        "params": approval.params,
        "plan": approval.plan,
        "binding": approval.binding,
        "requested_by": approval.requested_by_id,
    }
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), default=str)
    return salted_hmac(BINDING_SALT, text, algorithm="sha256").hexdigest()


def changes(approval: ActionApproval) -> str:
    """What changed since the request was asked ("" when nothing did): then
    approving it would run something other than what the approver is shown."""
    if not approval.signature or not constant_time_compare(
        approval.signature, _signature(approval)
    ):
        return "the request's plan or parameters changed"
    now = actions.binding(approval.step, approval.target)
    was = approval.binding
    if now["step"] != was.get("step"):
        fields = _differ(now["step"], was.get("step"))
        return f"the step {approval.step.key} changed ({fields})"
    if now["target"] != was.get("target"):
        fields = _differ(now["target"], was.get("target"))
        return f"the target {approval.target_name} changed ({fields})"
    return ""


def changed_since_approved(run: CheckRun) -> str:
    """For the worker, right before an approved action runs: what changed since it
    was approved ("" when nothing did, or the run was not approved)."""
    approval = ActionApproval.objects.filter(run=run).select_related("step", "target").first()
    if approval is None:
        return ""
    changed = changes(approval)
    return f"{changed} since request #{approval.pk} was approved" if changed else ""


def _differ(now: dict[str, Any] | None, was: dict[str, Any] | None) -> str:
    now, was = now or {}, was or {}
    return ", ".join(sorted(k for k in now.keys() | was.keys() if now.get(k) != was.get(k)))


def _void_message(pk: int, reason: str) -> str:
    return (
        f"Request #{pk} is void: {reason} since it was asked, so it will not run. "
        "Review the action again and ask anew."
    )


def _void(approval: ActionApproval, reason: str, actor: AbstractBaseUser) -> str:
    """Mark the request void (never runs) and say so on the timeline; the message."""
    approval.status, approval.decided_at, approval.reason = (
        ApprovalStatus.VOID,
        timezone.now(),
        reason[:500],
    )
    approval.save(update_fields=["status", "decided_at", "reason"])
    append_event(
        approval.incident,
        EventKind.ACTION,
        f"Request #{approval.pk} by {actor_name(approval.requested_by)} for "
        f"{approval.step.key} is void: {reason} since it was asked "
        f"({actor_name(actor)} tried to approve it): it will not run",
        actor=actor,
        data=_data(approval, "void") | {"reason": reason},
    )
    return _void_message(approval.pk, reason)
