"""A resolution action, from review to queue: what the responder may set (declared
by the probe), the exact plan, a signed confirmation of that plan, and the queued
run. Used by the incident page; an API or an approval flow goes through the same
functions, so none of them re-implements the protocol."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import IntegrityError, transaction

from incidents.models import Incident

from . import services
from .models import ActionConfirmation, CheckRun, RunbookStep, StepKind, Target
from .probes.base import ParamChoice

SIGNING_SALT = "lotoops.action-confirmation"
CONFIRMATION_MAX_AGE = 600  # seconds between "review" and "confirm"


@dataclass(frozen=True)
class Review:
    target: Target
    params: dict[str, Any]
    plan: str
    token: str


def choices(step: RunbookStep, incident: Incident) -> list[ParamChoice]:
    """What the responder sets for this action, given what the incident's checks found."""
    probe = step.probe_class()
    if probe is None:
        return []
    return probe.choices(dict(step.params), services.evidence_found(incident))


def review(incident: Incident, step: RunbookStep, target: Target, chosen: dict[str, Any]) -> Review:
    """The exact plan for these choices, and a signed token that confirms exactly it.
    Raises services.CheckError (nothing changed) when the action cannot run so."""
    if step.kind != StepKind.ACTION:
        raise services.CheckError(f"{step.key} is a diagnostic, not an action.")
    params = {**step.params, **chosen}
    plan, bound = services.plan_action_bound(step, target, params)
    params |= bound  # the rows the plan names: the run acts on those only
    token = signing.dumps(
        {
            "target": target.pk,
            "params": params,
            "plan": plan,
            "incident": incident.pk,
            "step": step.key,
            # What the plan was made with: an edit of either before confirming voids it.
            "binding": binding(step, target),
            # Single use: confirm() records the nonce, a replay finds it taken.
            "nonce": secrets.token_urlsafe(24),
        },
        salt=SIGNING_SALT,
    )
    return Review(target=target, params=params, plan=plan, token=token)


def confirm(
    incident: Incident, step: RunbookStep, token: str, *, actor: AbstractBaseUser
) -> CheckRun:
    """Queue the action the token confirms. Raises services.CheckError with the
    reason when the token is forged, expired, for another action, already used, or
    its target gone. A token queues at most one run: its nonce is recorded with the
    run in the same transaction (a unique row), so a replay, even a concurrent one,
    is refused."""
    data, target = checked(incident, step, token)
    with transaction.atomic():
        used = consume(data, incident, step, actor=actor)
        run = services.run_action(
            incident, step, actor=actor, target=target, params=data["params"], plan=data["plan"]
        )
        ActionConfirmation.objects.filter(pk=used.pk).update(run=run)
    return run


def checked(incident: Incident, step: RunbookStep, token: str) -> tuple[dict[str, Any], Target]:
    """The confirmed plan and its target, if the token is genuine, fresh and for
    this action (not yet spent: `consume` does that). Raises services.CheckError."""
    data = _load(token)
    if data.get("incident") != incident.pk or data.get("step") != step.key:
        raise services.CheckError("That confirmation is for another action.")
    target = Target.objects.filter(pk=data.get("target"), active=True).first()
    if target is None:
        raise services.CheckError("The action's target is gone or inactive: review it again.")
    if data.get("binding") != binding(step, target):
        raise services.CheckError(
            "The action's step or target changed since you reviewed it: review it again."
        )
    return data, target


def binding(step: RunbookStep, target: Target | None) -> dict[str, Any]:
    """What a reviewed plan is bound to besides its own plan and parameters: the
    step's probe (which code runs) and the target's address (where it runs), as they
    were. No secret: the target names its variable, never its value."""
    return {
        "step": {"key": step.key, "kind": step.kind, "probe": step.probe},
        "target": None
        if target is None
        else {
            "name": target.name,
            "kind": target.kind,
            "url": target.url,
            "secret_env": target.secret_env,
            "options": target.options,
        },
    }


def _load(token: str) -> dict[str, Any]:
    try:
        data = signing.loads(token, salt=SIGNING_SALT, max_age=CONFIRMATION_MAX_AGE)
    except signing.SignatureExpired:
        raise services.CheckError("That confirmation expired: review the action again.") from None
    except signing.BadSignature:
        raise services.CheckError(
            "That confirmation is not valid: review the action again."
        ) from None
    if not isinstance(data, dict) or not data.get("nonce"):
        raise services.CheckError("That confirmation is not valid: review the action again.")
    return data


def consume(
    data: dict[str, Any], incident: Incident, step: RunbookStep, *, actor: AbstractBaseUser
) -> ActionConfirmation:
    """Record a confirmation's nonce as used (call inside the transaction that
    queues the run). A second insert of the same nonce waits for the first
    transaction and then fails on the unique constraint: CheckError."""
    try:
        with transaction.atomic():
            return ActionConfirmation.objects.create(
                nonce=str(data["nonce"])[:64], incident=incident, step_key=step.key, used_by=actor
            )
    except IntegrityError:
        pass
    earlier = ActionConfirmation.objects.filter(nonce=str(data["nonce"])[:64]).first()
    ran = f": the action ran as check run #{earlier.run_id}" if earlier and earlier.run_id else ""
    raise services.CheckError(f"This confirmation was already used{ran}.")
