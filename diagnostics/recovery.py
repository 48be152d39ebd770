"""Verified recovery: an incident whose procedure names recovery checks resolves
only when they pass twice, RECOVERY_INTERVAL apart; a commander may resolve anyway
with a reason; for RECOVERY_WATCH after the resolution the checks are re-run and
the first failure reopens the incident (once).

How it hooks in (incidents never imports diagnostics):
- `incidents.services.transition_incident` sends `resolution_requested` before it
  resolves; `hold_resolution` answers it. No recovery checks for the category: None,
  the incident resolves at once, as it always did. A verification that passed (or an
  override) is consumed and the incident resolves. Otherwise a verification starts
  (round 1 queued through the engine) and its timeline event holds the status back.
  Every path to "resolved" (pages, API, tasks) goes through that service.
- The checks are ordinary check runs (`request_check`, batch `recovery-<id>-<round>`),
  run by the workers and streamed to the page like any other; `on_check_finished`
  (like verification.py, on `check_finished`, in finish_run's transaction) judges a
  round when its last run finishes.
- Locks: the incident row first, then the verification row, everywhere.

"Verifying" is a marker (RecoveryVerification.state), not an incident status: the
incident keeps its status (mitigated, usually) while its checks run, because nothing
is resolved until they pass, and every existing reader of the status (dashboard, SLA,
reports, API clients, alert routing) keeps its meaning.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from incidents import signals as incident_signals
from incidents.access import can_override_recovery
from incidents.models import REOPENABLE, EventKind, Incident, Status, TimelineEvent
from incidents.rules.text import format_duration
from incidents.services import IncidentError, reopen_incident, transition_incident
from incidents.timeline import actor_name, append_event

from . import signals
from .models import (
    CheckRun,
    RecoveryState,
    RecoveryVerification,
    Runbook,
    RunbookStep,
    RunStatus,
)
from .services import CheckError, request_check

log = logging.getLogger(__name__)
BATCH_PREFIX = "recovery-"
ROUNDS = 2


class RecoveryError(IncidentError):
    """A recovery request that cannot be carried out; nothing was changed."""


# --- what to check --------------------------------------------------------------------


def recovery_checks_for(incident: Incident) -> list[str]:
    """The step keys every procedure for the incident's category names, in order."""
    keys: list[str] = []
    for book in Runbook.objects.order_by("order", "pk"):
        if incident.category in (book.categories or []):
            keys += [key for key in book.recovery_checks or [] if key not in keys]
    return keys


def passed(run: CheckRun) -> bool:
    """A recovery check passes only with a clean result: a warning (a queue at its
    warning depth, an error rate over its warning threshold) is not recovered."""
    return run.status == RunStatus.SUCCEEDED and run.outcome == "ok"


def failing_evidence(run: CheckRun) -> dict[str, Any]:
    return {
        "step": run.step.key,
        "run": run.pk,
        "target": run.target_name,
        "status": run.status,
        "outcome": run.outcome,
        "summary": run.summary[:500],
        "evidence": run.evidence,
    }


def describe_failures(failures: list[dict[str, Any]]) -> str:
    parts = []
    for f in failures:
        what = f["outcome"] if f["status"] == RunStatus.SUCCEEDED else f["status"]
        parts.append(f"{f['step']} on {f['target']} {what}: {f['summary']} (check run #{f['run']})")
    return "; ".join(parts)


def _batch(verification: RecoveryVerification, label: str) -> str:
    return f"{BATCH_PREFIX}{verification.pk}-{label}"


def _parse_batch(batch: str) -> tuple[int, str] | None:
    if not batch.startswith(BATCH_PREFIX):
        return None
    ident, _, label = batch[len(BATCH_PREFIX) :].partition("-")
    if not ident.isdigit() or not label:
        return None
    return int(ident), label


def _run_round(
    verification: RecoveryVerification, label: str, actor: AbstractBaseUser | None
) -> list[CheckRun]:
    """Queue every recovery check once, through the engine (runs on commit)."""
    steps = {s.key: s for s in RunbookStep.objects.filter(key__in=verification.checks)}
    runs: list[CheckRun] = []
    for key in verification.checks:
        step = steps.get(key)
        if step is None:
            raise RecoveryError(f"Recovery check {key} no longer exists: fix the procedure.")
        try:
            runs += request_check(
                verification.incident,
                step,
                actor=actor,  # type: ignore[arg-type]  (None: LotoOps itself)
                batch=_batch(verification, label),
            )
        except CheckError as exc:
            raise RecoveryError(f"Recovery check {key} cannot run: {exc}") from None
    return runs


def _lock_incident(incident_id: int) -> Incident:
    return Incident.objects.select_for_update().get(pk=incident_id)


def _stop_older_watches(incident: Incident, keep: int | None = None) -> None:
    RecoveryVerification.objects.filter(incident=incident, watch_until__isnull=False).exclude(
        pk=keep
    ).update(watch_until=None, next_watch_at=None)


# --- the gate: "Mark resolved" ---------------------------------------------------------


@receiver(
    incident_signals.resolution_requested, sender=Incident, dispatch_uid="recovery-hold-resolution"
)
def hold_resolution(
    incident: Incident,
    actor: AbstractBaseUser | None,
    now: datetime,
    **_: Any,
) -> TimelineEvent | None:
    """In transition_incident's transaction, the incident locked: let it resolve
    (None) or start verifying its recovery (the event that says so)."""
    cleared = (
        RecoveryVerification.objects.select_for_update()
        .filter(
            incident=incident,
            state__in=[RecoveryState.PASSED, RecoveryState.OVERRIDDEN],
            resolved_at__isnull=True,
        )
        .order_by("-pk")
        .first()
    )
    if cleared is not None:
        _stop_older_watches(incident, keep=cleared.pk)
        cleared.resolved_at = now
        fields = ["resolved_at"]
        if cleared.state == RecoveryState.PASSED:
            # Overridden resolutions are not watched: the commander said the checks
            # do not tell the truth this time.
            cleared.state = RecoveryState.RESOLVED
            fields.append("state")
            if settings.RECOVERY_WATCH > 0:
                cleared.watch_until = now + timedelta(seconds=settings.RECOVERY_WATCH)
                cleared.next_watch_at = now + timedelta(seconds=settings.RECOVERY_WATCH_EVERY)
                fields += ["watch_until", "next_watch_at"]
        cleared.save(update_fields=fields)
        return None
    keys = recovery_checks_for(incident)
    if not keys:
        return None  # no recovery checks configured: resolved at once, as always
    active = RecoveryVerification.objects.filter(
        incident=incident, state=RecoveryState.VERIFYING
    ).first()
    if active is not None:
        raise RecoveryError(
            f"Recovery is already being verified (round {active.round} of {active.rounds}, "
            f"asked by {actor_name(active.requested_by)}): the incident resolves when "
            "its checks pass."
        )
    _stop_older_watches(incident)
    interval = float(settings.RECOVERY_INTERVAL)
    verification = RecoveryVerification.objects.create(
        incident=incident,
        requested_by=actor,
        checks=keys,
        rounds=ROUNDS,
        interval_seconds=interval,
        started_at=now,
    )
    event = append_event(
        incident,
        EventKind.RECOVERY,
        f"{actor_name(actor)} asked to resolve: verifying recovery first. "
        f"{', '.join(keys)} must pass twice, {format_duration(interval)} apart; the incident "
        f"stays {Status(incident.status).label.lower()} until then.",
        actor=actor,
        data={"recovery": verification.pk, "state": RecoveryState.VERIFYING, "checks": keys},
    )
    _run_round(verification, "1", actor)
    return event


# --- judging a round ---------------------------------------------------------------------


@receiver(signals.check_finished, sender=CheckRun, dispatch_uid="recovery-rounds")
def on_check_finished(run: CheckRun, **_: Any) -> None:
    """In finish_run's transaction (the incident's row is locked by its timeline
    event): when the last run of a recovery round finishes, judge the round. Of two
    runs finishing together, the second to take the incident's lock sees both."""
    parsed = _parse_batch(run.batch)
    if parsed is None:
        return
    ident, label = parsed
    verification = (
        RecoveryVerification.objects.select_for_update(of=("self",))
        .select_related("incident", "requested_by")
        .filter(pk=ident, incident_id=run.incident_id)
        .first()
    )
    if verification is None:
        return
    runs = list(
        CheckRun.objects.filter(incident_id=run.incident_id, batch=run.batch).select_related("step")
    )
    if any(r.active for r in runs):
        return
    if label.startswith("w") and label[1:].isdigit():
        _judge_watch(verification, runs, int(label[1:]))
    elif label.isdigit():
        _judge_round(verification, runs, int(label))


def _judge_round(verification: RecoveryVerification, runs: list[CheckRun], number: int) -> None:
    v = verification
    if v.state != RecoveryState.VERIFYING or v.round != number or v.next_round_at is not None:
        return  # judged already, or superseded
    incident = v.incident
    now = timezone.now()
    failures = [failing_evidence(r) for r in runs if not passed(r)]
    if failures:
        v.state, v.failures, v.finished_at = RecoveryState.FAILED, failures, now
        v.save(update_fields=["state", "failures", "finished_at"])
        append_event(
            incident,
            EventKind.RECOVERY,
            f"Recovery not verified (round {number} of {v.rounds}): "
            f"{describe_failures(failures)}. The incident stays "
            f"{Status(incident.status).label.lower()}: fix it and mark it resolved again, "
            "or resolve it with a reason (override).",
            data={
                "recovery": v.pk,
                "state": RecoveryState.FAILED,
                "round": number,
                "failing": failures,
            },
        )
        return
    names = ", ".join(f"{r.step.key} (#{r.pk})" for r in runs)
    if number < v.rounds:
        due = now + timedelta(seconds=v.interval_seconds)
        v.next_round_at = due
        v.save(update_fields=["next_round_at"])
        append_event(
            incident,
            EventKind.RECOVERY,
            f"Recovery checks passed (round {number} of {v.rounds}): {names}; "
            f"running them again in {format_duration(v.interval_seconds)}.",
            data={
                "recovery": v.pk,
                "state": RecoveryState.VERIFYING,
                "round": number,
                "passed": [r.pk for r in runs],
                "next_round_at": due.isoformat(),
            },
        )
        _schedule_round(v.pk, number + 1, v.interval_seconds)
        return
    v.state, v.finished_at = RecoveryState.PASSED, now
    v.save(update_fields=["state", "finished_at"])
    append_event(
        incident,
        EventKind.RECOVERY,
        f"Recovery verified: every check passed {v.rounds} times, "
        f"{format_duration(v.interval_seconds)} apart (last round: {names}).",
        data={"recovery": v.pk, "state": RecoveryState.PASSED, "passed": [r.pk for r in runs]},
    )
    try:
        transition_incident(
            incident,
            Status.RESOLVED,
            actor=v.requested_by,  # type: ignore[arg-type]
            note="recovery verified",
        )
    except IncidentError as exc:
        v.state = RecoveryState.CANCELLED
        v.save(update_fields=["state"])
        append_event(
            incident,
            EventKind.RECOVERY,
            f"Recovery verified, but the incident was not resolved: {exc}",
            data={"recovery": v.pk, "state": RecoveryState.CANCELLED},
        )


def _schedule_round(verification_id: int, number: int, countdown: float) -> None:
    # The task module imports this one (its tasks call these functions).
    from .tasks import start_recovery_round

    def send() -> None:
        try:
            start_recovery_round.apply_async((verification_id, number), countdown=countdown)
        except Exception as exc:  # the broker is down: the beat's sweep starts it
            log.warning("could not schedule recovery round: %s", type(exc).__name__)

    transaction.on_commit(send)


def start_round(verification_id: int, number: int, *, now: datetime | None = None) -> bool:
    """Start round `number` once it is due; of two callers (the countdown task and
    the beat's sweep) one starts it. A round that cannot start fails the verification."""
    now = now or timezone.now()
    incident_id = (
        RecoveryVerification.objects.filter(pk=verification_id)
        .values_list("incident_id", flat=True)
        .first()
    )
    if incident_id is None:
        return False
    with transaction.atomic():
        _lock_incident(incident_id)
        claimed = RecoveryVerification.objects.filter(
            pk=verification_id,
            state=RecoveryState.VERIFYING,
            round=number - 1,
            next_round_at__lte=now,
        ).update(round=number, next_round_at=None)
        if not claimed:
            return False
        v = RecoveryVerification.objects.select_related("incident").get(pk=verification_id)
        try:
            with transaction.atomic():
                _run_round(v, str(number), None)
        except RecoveryError as exc:
            v.state, v.finished_at = RecoveryState.FAILED, now
            v.failures = [
                {
                    "step": "-",
                    "run": 0,
                    "target": "-",
                    "status": RunStatus.FAILED,
                    "outcome": "error",
                    "summary": str(exc),
                    "evidence": {},
                }
            ]
            v.save(update_fields=["state", "finished_at", "failures"])
            append_event(
                v.incident,
                EventKind.RECOVERY,
                f"Recovery not verified (round {number} of {v.rounds}): {exc}",
                data={"recovery": v.pk, "state": RecoveryState.FAILED, "round": number},
            )
    return True


def due_rounds(now: datetime | None = None) -> list[tuple[int, int]]:
    """(verification, round) pairs whose next round is due."""
    now = now or timezone.now()
    return [
        (pk, number + 1)
        for pk, number in RecoveryVerification.objects.filter(
            state=RecoveryState.VERIFYING, next_round_at__lte=now
        ).values_list("pk", "round")
    ]


# --- override -----------------------------------------------------------------------------


def override_resolution(
    incident: Incident, *, actor: AbstractBaseUser, reason: str, now: datetime | None = None
) -> TimelineEvent:
    """Resolve without verified recovery: a commander's call, with a reason, on the
    timeline (and so on the audit trail) with the evidence that failed last."""
    reason = reason.strip()
    if not reason:
        raise RecoveryError("Say why the incident is resolved without verified recovery.")
    if not can_override_recovery(actor, incident):
        raise RecoveryError(
            "Only an incident commander (incidents.override_recovery) may resolve "
            "without verified recovery."
        )
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_incident(incident.pk)
        if Status.RESOLVED not in locked.allowed_transitions():
            raise RecoveryError(
                f"An incident that is {Status(locked.status).label.lower()} cannot be resolved."
            )
        RecoveryVerification.objects.filter(incident=locked, state=RecoveryState.VERIFYING).update(
            state=RecoveryState.CANCELLED, finished_at=now
        )
        last = (
            RecoveryVerification.objects.filter(incident=locked, state=RecoveryState.FAILED)
            .order_by("-pk")
            .first()
        )
        failures = last.failures if last else []
        verification = RecoveryVerification.objects.create(
            incident=locked,
            requested_by=actor,
            state=RecoveryState.OVERRIDDEN,
            checks=recovery_checks_for(locked),
            reason=reason,
            failures=failures,
            started_at=now,
            finished_at=now,
        )
        message = f"{actor_name(actor)} resolved without verified recovery (override): {reason}"
        if failures:
            message += f". Failing when overridden: {describe_failures(failures)}"
        append_event(
            locked,
            EventKind.RECOVERY,
            message,
            actor=actor,
            data={
                "recovery": verification.pk,
                "state": RecoveryState.OVERRIDDEN,
                "reason": reason,
                "failing": failures,
            },
            at=now,
        )
        event = transition_incident(
            locked, Status.RESOLVED, actor=actor, note=f"override: {reason}", now=now
        )
    incident.refresh_from_db()
    return event


# --- the watch after resolution -----------------------------------------------------------


def start_due_watches(now: datetime | None = None) -> list[int]:
    """Re-run the recovery checks of incidents resolved less than RECOVERY_WATCH ago
    whose next watch round is due; each round is claimed by one caller only (two
    beats or workers at once start it once). Ends the watches that ran their time."""
    now = now or timezone.now()
    started: list[int] = []
    due = list(
        RecoveryVerification.objects.filter(
            state=RecoveryState.RESOLVED,
            watch_until__gt=now,
            next_watch_at__lte=now,
            incident__status__in=REOPENABLE,
        ).values_list("pk", "incident_id", "watch_round")
    )
    every = timedelta(seconds=settings.RECOVERY_WATCH_EVERY)
    for pk, incident_id, number in due:
        with transaction.atomic():
            _lock_incident(incident_id)
            claimed = RecoveryVerification.objects.filter(
                pk=pk, state=RecoveryState.RESOLVED, watch_round=number, next_watch_at__lte=now
            ).update(watch_round=number + 1, next_watch_at=now + every)
            if not claimed:
                continue
            v = RecoveryVerification.objects.select_related("incident").get(pk=pk)
            try:
                with transaction.atomic():
                    _run_round(v, f"w{number + 1}", None)
                started.append(pk)
            except RecoveryError as exc:
                append_event(
                    v.incident,
                    EventKind.RECOVERY,
                    f"Recovery watch could not run its checks: {exc}",
                    data={"recovery": v.pk, "watch_round": number + 1},
                )
    for v in RecoveryVerification.objects.filter(
        state=RecoveryState.RESOLVED, watch_until__lte=now
    ).select_related("incident"):
        with transaction.atomic():
            _lock_incident(v.incident_id)
            if RecoveryVerification.objects.filter(pk=v.pk, watch_until__lte=now).update(
                watch_until=None, next_watch_at=None
            ):
                append_event(
                    v.incident,
                    EventKind.RECOVERY,
                    f"Recovery watch over: the checks passed in all {v.watch_judged} watch rounds.",
                    data={"recovery": v.pk, "watch_rounds": v.watch_judged},
                )
    return started


def _judge_watch(verification: RecoveryVerification, runs: list[CheckRun], number: int) -> None:
    """A watch round's result: quiet when it passed; the first failure reopens the
    incident once (the row lock and `reopened_at` make a second failure, from a
    concurrent round, a no-op)."""
    v = verification
    if number <= v.watch_judged:
        return
    v.watch_judged = number
    v.save(update_fields=["watch_judged"])
    failures = [failing_evidence(r) for r in runs if not passed(r)]
    if not failures or v.reopened_at is not None or v.state != RecoveryState.RESOLVED:
        return
    incident = Incident.objects.get(pk=v.incident_id)
    if incident.status not in REOPENABLE:
        return  # reopened by someone already
    now = timezone.now()
    v.state, v.reopened_at, v.failures = RecoveryState.REOPENED, now, failures
    v.watch_until = v.next_watch_at = None
    v.save(update_fields=["state", "reopened_at", "failures", "watch_until", "next_watch_at"])
    reopen_incident(
        incident,
        actor=None,  # type: ignore[arg-type]  (LotoOps itself)
        reason=f"a recovery check failed within {format_duration(settings.RECOVERY_WATCH)} "
        f"of the resolution: {describe_failures(failures)}",
        now=now,
    )
    append_event(
        incident,
        EventKind.RECOVERY,
        f"Recovery watch round {number} failed: the incident is reopened. "
        f"{describe_failures(failures)}",
        data={
            "recovery": v.pk,
            "state": RecoveryState.REOPENED,
            "watch_round": number,
            "failing": failures,
        },
    )


# --- what the page shows --------------------------------------------------------------------


def latest_verification(incident: Incident) -> RecoveryVerification | None:
    return (
        RecoveryVerification.objects.filter(incident=incident)
        .select_related("requested_by")
        .order_by("-pk")
        .first()
    )
