"""The runbook engine's state changes: ask for a check, confirm an action, record
output and results, reap runs whose worker died. Each appends the incident's
timeline through incidents.timeline in the same transaction; a finished run
sends `diagnostics.signals.check_finished`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from incidents import live
from incidents.evidence import EvidenceError, store_file
from incidents.models import EventKind, Incident
from incidents.services import IncidentError
from incidents.timeline import actor_name, append_event

from . import queues, signals
from .models import (
    ACTIVE_RUN_STATUSES,
    CheckRun,
    Runbook,
    RunbookStep,
    RunStatus,
    StepKind,
    Target,
)
from .probes.base import Probe, ProbeError, ProbeResult
from .probes.redact import redact, redact_json

# The page shows this much of a run's output; the whole text (up to the store
# cap) is downloadable.
OUTPUT_PAGE_CAP = 16 * 1024
OUTPUT_STORE_CAP = 2 * 1024 * 1024
log = logging.getLogger(__name__)
UNSENT = (
    "The task queue is unreachable: the run is saved and LotoOps sends it as soon as "
    "the queue is back."
)


class CheckError(IncidentError):
    """A check or action that cannot be run as asked; nothing was changed."""


# --- secrets -------------------------------------------------------------------


# The names of the variables targets read their secrets from, per process: a check
# run masks every target's secret, not only its own, and this spares it a query each.
# A target added since is masked at the latest SECRET_NAMES_TTL seconds later (and at
# once in its own runs: the run's target is always added).
SECRET_NAMES_TTL = 30.0
_secret_names: tuple[float, frozenset[str]] | None = None


def _target_secret_names() -> frozenset[str]:
    global _secret_names
    now = time.monotonic()
    if _secret_names is None or now - _secret_names[0] > SECRET_NAMES_TTL:
        names = Target.objects.exclude(secret_env="").values_list("secret_env", flat=True)
        _secret_names = (now, frozenset(names))
    return _secret_names[1]


def known_secrets(target: Target | None = None) -> list[str]:
    """Every secret a probe could see: the values of the targets' environment
    variables (`target`'s read now) and the passwords in our own service URLs."""
    names = set(_target_secret_names())
    if target is not None and target.secret_env:
        names.add(target.secret_env)
    values = {os.environ.get(name, "") for name in names}
    for url in (settings.DATABASE_URL, settings.REDIS_URL, settings.CELERY_BROKER_URL):
        with contextlib.suppress(ValueError):
            values.add(urlsplit(url).password or "")
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


# --- which steps for which incident ----------------------------------------------


def runbooks_for(incident: Incident) -> list[Runbook]:
    """The procedures for the incident's category first, then the general ones
    (initial response, reference), then the rest."""
    books = list(Runbook.objects.all())

    def rank(book: Runbook) -> tuple[int, int]:
        if incident.category in book.categories:
            return (0, book.order)
        return (1 if not book.categories else 2, book.order)

    return sorted(books, key=rank)


def default_target(kind: str) -> Target | None:
    return Target.objects.filter(kind=kind, active=True).order_by("name").first()


def targets_for(step: RunbookStep, target: Target | None = None) -> list[Target]:
    if target is not None:
        if target.kind != step.target_kind or not target.active:
            raise CheckError(f"{target.name} is not an active {step.get_target_kind_display()}.")
        return [target]
    if step.every_target:
        found = list(Target.objects.filter(kind=step.target_kind, active=True).order_by("name"))
    else:
        found = [t for t in [default_target(step.target_kind)] if t is not None]
    if not found:
        raise CheckError(
            f"No {step.get_target_kind_display()} target is configured: add one in the admin."
        )
    return found


@dataclass
class Finding:
    """One evidence key a diagnostic found, with the run that found it and when.
    Superseded when a later successful run of the same check (same incident, step
    and target) no longer finds it: the action it recommended is no longer
    recommended, and the pids in its details are no longer offered."""

    key: str
    details: Any
    run: int
    step: str
    target: str
    found_at: datetime | None
    superseded_by: int | None = None
    superseded_at: datetime | None = None

    @property
    def current(self) -> bool:
        return self.superseded_by is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "step": self.step,
            "target": self.target,
            "details": self.details,
            "found_at": self.found_at,
        }


def findings(incident: Incident, runs: Iterable[CheckRun] | None = None) -> list[Finding]:
    """What the incident's diagnostics found, newest first: the current findings
    and, per check and key, the latest superseded one. From `runs` (newest first,
    steps loaded) when the caller has them, else the latest 300 runs. Only runs that
    succeeded count: a check that could not look (error, timeout) supersedes nothing."""
    if runs is None:
        runs = (
            incident.check_runs.filter(status=RunStatus.SUCCEEDED)
            .select_related("step")
            .order_by("-id")[:300]
        )
    done = [r for r in runs if r.status == RunStatus.SUCCEEDED and r.step.kind != StepKind.ACTION]
    # Oldest observation first: the time the probe looked, then the queue order.
    done.sort(key=lambda r: (r.started_at or r.queued_at, r.pk))
    open_: dict[tuple[int, str, str], Finding] = {}
    superseded: dict[tuple[int, str, str], Finding] = {}
    for run in done:
        check = (run.step_id, run.target_name)
        for (step_id, target, key), finding in list(open_.items()):
            if (step_id, target) == check and key not in run.evidence:
                finding.superseded_by = run.pk
                finding.superseded_at = run.finished_at
                superseded[(step_id, target, key)] = open_.pop((step_id, target, key))
        for key, details in run.evidence.items():
            open_[(*check, key)] = Finding(
                key=key,
                details=details,
                run=run.pk,
                step=run.step.key,
                target=run.target_name,
                found_at=run.finished_at,
            )
            superseded.pop((*check, key), None)
    found = list(open_.values()) + list(superseded.values())
    found.sort(key=lambda f: (f.current, f.run), reverse=True)
    return found


def evidence_found(
    incident: Incident, runs: Iterable[CheckRun] | None = None
) -> dict[str, dict[str, Any]]:
    """The current findings by evidence key, the latest first (a key two checks
    found: the latest run's). Superseded findings are left out."""
    found: dict[str, dict[str, Any]] = {}
    for finding in findings(incident, runs):
        if finding.current:
            found.setdefault(finding.key, finding.as_dict())
    return found


# --- asking for checks -------------------------------------------------------------


def _probe_for(step: RunbookStep) -> type[Probe]:
    if step.kind == StepKind.MANUAL:
        raise CheckError(f"{step.key} is run by hand: copy its command.")
    probe = step.probe_class()
    if probe is None:
        raise CheckError(f"{step.key} is not available yet: its {step.probe} probe is to come.")
    if mismatch := step.kind_mismatch():
        raise CheckError(f"{step.key} cannot run: {mismatch}")
    return probe


def _enqueue(runs: list[CheckRun]) -> None:
    # The task module imports this one (it calls claim/finish_run): import it here.
    from .tasks import run_check

    def send() -> None:
        for run in runs:
            try:
                run_check.apply_async(
                    (run.pk,),
                    queue=queues.for_check(run.step.probe, run.step.timeout_seconds),
                    soft_time_limit=run.step.timeout_seconds + 5,
                    time_limit=run.step.timeout_seconds + 30,
                )
            except Exception as exc:  # the broker is down: the run stays queued
                log.warning("could not send check run %s: %s", run.pk, type(exc).__name__)
                # The reaper (beat, every 15 s) sends again what is queued past the
                # requeue delay: date this run back so its next pass retries it.
                CheckRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                    queued_at=timezone.now()
                    - timedelta(seconds=settings.CHECK_RUN_REQUEUE_AFTER + 1)
                )
                run.send_error = UNSENT

    transaction.on_commit(send)


def request_check(
    incident: Incident,
    step: RunbookStep,
    *,
    actor: AbstractBaseUser | None,
    target: Target | None = None,
    batch: str = "",
    because: str = "",
) -> list[CheckRun]:
    """Queue a diagnostic (once per target for every-target steps)."""
    probe = _probe_for(step)
    if step.kind != StepKind.DIAGNOSTIC:
        raise CheckError(f"{step.key} changes the platform: review and confirm it first.")
    try:
        probe.build(_any_target(step), step.params, timeout=step.timeout_seconds)
    except ProbeError as exc:
        raise CheckError(f"{step.key} has a malformed parameter: {exc}") from None
    _refuse_step_secrets(step, step.params)
    targets = targets_for(step, target)
    _refuse_secrets(targets)
    with transaction.atomic():
        # One request at a time per incident, in every web process: the incident's
        # row lock (the one append_event takes) orders concurrent requests, so the
        # second of a double click sees the first's run and gets it back.
        list(Incident.objects.select_for_update(no_key=True).filter(pk=incident.pk).values("pk"))
        same = _same_request(incident, step, actor, targets, params=step.params, batch=batch)
        if len(same) == len(targets):
            for run in same:
                run.repeated = True
            return same
        taken = {r.target_id for r in same}
        runs = [
            CheckRun.objects.create(
                incident=incident,
                step=step,
                target=t,
                target_name=t.name,
                requested_by=actor,
                params=step.params,
                batch=batch,
            )
            for t in targets
            if t.pk not in taken
        ]
        append_event(
            incident,
            EventKind.CHECK_RUN,
            f"{actor_name(actor)} ran {step.key} ({step.display_title}) on "
            f"{', '.join(r.target_name for r in runs)}" + (f" {because}" if because else ""),
            actor=actor,
            data={"step": step.key, "runs": [r.pk for r in runs]},
        )
        _enqueue(runs)
    return same + runs


# A second identical request within this many seconds of the first (or while the
# first is still queued or running) gets the first's run back: a double click.
REPEAT_WINDOW = 2.0


def _same_request(
    incident: Incident,
    step: RunbookStep,
    actor: AbstractBaseUser | None,
    targets: list[Target],
    *,
    params: dict[str, Any],
    batch: str = "",
) -> list[CheckRun]:
    """The runs of this very request (same incident, step, parameters, person,
    target and batch: a recovery round is never another request's repeat) that are
    queued or running, or were asked for within REPEAT_WINDOW; at most one per
    target, the latest."""
    since = timezone.now() - timedelta(seconds=REPEAT_WINDOW)
    user = actor if actor is not None and actor.is_authenticated else None
    candidates = (
        CheckRun.objects.filter(
            incident=incident, step=step, target__in=targets, requested_by=user, batch=batch
        )
        .filter(Q(status__in=ACTIVE_RUN_STATUSES) | Q(queued_at__gte=since))
        .select_related("step", "target")
        .order_by("-id")
    )
    found: dict[int, CheckRun] = {}
    for run in candidates:
        if run.params == params and run.target_id not in found:
            found[run.target_id] = run
    return list(found.values())


def _refuse_secrets(targets: Iterable[Target]) -> None:
    refused = [f"{t.name}: {refusal}" for t in targets if (refusal := t.run_refusal())]
    if refused:
        raise CheckError("Refused: " + "; ".join(refused))


def _refuse_step_secrets(step: RunbookStep, params: dict[str, Any]) -> None:
    if refusal := step.run_refusal(params):
        raise CheckError(f"Refused: step {step.key}: {refusal}")


def _any_target(step: RunbookStep) -> Target:
    return Target(name="-", kind=step.target_kind, url="x://-")


def run_all_diagnostics(
    incident: Incident, runbook: Runbook, *, actor: AbstractBaseUser
) -> list[CheckRun]:
    """Every available diagnostic of one procedure, in parallel (one task each)."""
    batch = uuid.uuid4().hex[:12]
    runs: list[CheckRun] = []
    skipped: list[str] = []
    with transaction.atomic():
        for step in runbook.steps.filter(kind=StepKind.DIAGNOSTIC).order_by("order"):
            if not step.available:
                skipped.append(f"{step.key} (not available yet)")
                continue
            try:
                runs += request_check(incident, step, actor=actor, batch=batch)
            except CheckError as exc:
                skipped.append(f"{step.key} ({exc})")
        if not runs:
            raise CheckError("Nothing to run here: " + "; ".join(skipped))
        if skipped:
            append_event(
                incident,
                EventKind.CHECK_RUN,
                f"Run all diagnostics of “{runbook.title}” skipped: " + "; ".join(skipped),
                actor=actor,
                data={"batch": batch, "skipped": skipped},
            )
    return runs


# --- actions -----------------------------------------------------------------------


def plan_action(step: RunbookStep, target: Target, params: dict[str, Any]) -> str:
    """The exact sentence of what the action will do (may read the platform)."""
    return plan_action_bound(step, target, params)[0]


def plan_action_bound(
    step: RunbookStep, target: Target, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The plan's sentence and the parameters it binds (the exact rows it names: the
    run acts on those only)."""
    probe = _probe_for(step)
    if step.kind != StepKind.ACTION:
        raise CheckError(f"{step.key} is a diagnostic, not an action.")
    _refuse_step_secrets(step, params)
    _refuse_secrets([target])
    try:
        built = probe.build(target, params, timeout=min(step.timeout_seconds, 15))
        return built.plan(), dict(built.bound)
    except ProbeError as exc:
        raise CheckError(str(exc)) from None


def run_action(
    incident: Incident,
    step: RunbookStep,
    *,
    actor: AbstractBaseUser,
    target: Target,
    params: dict[str, Any],
    plan: str,
) -> CheckRun:
    """Queue a confirmed action; the confirmation and its plan go on the timeline."""
    _probe_for(step)
    if step.kind != StepKind.ACTION:
        raise CheckError(f"{step.key} is a diagnostic, not an action.")
    if not incident.is_open:
        raise CheckError("The incident is not open: reopen it before changing the platform.")
    with transaction.atomic():
        run = CheckRun.objects.create(
            incident=incident,
            step=step,
            target=target,
            target_name=target.name,
            requested_by=actor,
            confirmed_by=actor,
            params=params,
            plan=plan,
        )
        append_event(
            incident,
            EventKind.ACTION,
            f"{actor_name(actor)} confirmed {step.key}: {plan}",
            actor=actor,
            data={"step": step.key, "run": run.pk, "plan": plan, "params": params},
        )
        _enqueue([run])
    return run


# --- the worker side ------------------------------------------------------------------


def claim(run_id: int, worker: str) -> bool:
    """Take a queued run; a second delivery of the same task finds nothing to take."""
    now = timezone.now()
    return bool(
        CheckRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker[:200],
            attempts=F("attempts") + 1,
            version=F("version") + 1,
        )
    )


def _stored_output(run: CheckRun, text: str, secrets: list[str]) -> tuple[str, int]:
    """What of `text` is stored (redacted, within the store cap) and how much it
    counts towards the run's output size."""
    text = redact(text, secrets)
    room = max(0, OUTPUT_STORE_CAP - run.output_size)
    stored = text[:room]
    if len(stored) < len(text) and room > 0:
        stored += "\n[output cut: over the storage cap]\n"
    return stored, len(text)


def append_output(run: CheckRun, text: str, secrets: list[str]) -> None:
    """Add streamed output (redacted, capped) and wake the incident's streams."""
    if not text:
        return
    stored, size = _stored_output(run, text, secrets)
    CheckRun.objects.filter(pk=run.pk).update(
        output=Concat(F("output"), Value(stored)),
        output_size=F("output_size") + size,
        heartbeat_at=timezone.now(),
        version=F("version") + 1,
    )
    run.output_size += size
    transaction.on_commit(lambda: live.publish(run.incident_id, 0))


def heartbeat(run: CheckRun) -> None:
    CheckRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())


def requeue(run: CheckRun, reason: str) -> bool:
    """Put a running run back in the queue for a retry (after a transient error)."""
    with transaction.atomic():
        done = CheckRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.QUEUED, version=F("version") + 1
        )
        if done:
            append_event(
                run.incident,
                EventKind.CHECK_RESULT,
                f"{run.step.key} on {run.target_name}: {reason}; retrying",
                data={"step": run.step.key, "run": run.pk, "status": "retrying"},
            )
    return bool(done)


def finish_run(
    run: CheckRun,
    status: str,
    *,
    result: ProbeResult | None = None,
    error: str = "",
    secrets: list[str] | None = None,
    output: str = "",
) -> bool:
    """Record the final state (once) and put the result on the timeline; `output`
    is the probe's last lines, not flushed yet (stored in the same write)."""
    secrets = known_secrets() if secrets is None else secrets
    tail: dict[str, Any] = {}
    if output:
        stored, size = _stored_output(run, output, secrets)
        tail = {
            "output": Concat(F("output"), Value(stored)),
            "output_size": F("output_size") + size,
        }
    now = timezone.now()
    if result is not None:
        outcome, summary = result.outcome, redact(result.summary, secrets)
        data, evidence = redact_json(result.data, secrets), redact_json(result.evidence, secrets)
    else:
        outcome, summary, data, evidence = "error", redact(error, secrets), {}, {}
    with transaction.atomic():
        done = CheckRun.objects.filter(pk=run.pk, status__in=ACTIVE_RUN_STATUSES).update(
            status=status,
            outcome=outcome,
            summary=summary[:2000],
            result=data,
            evidence=evidence,
            finished_at=now,
            version=F("version") + 1,
            **tail,
        )
        if not done:
            _discard_files(result)
            return False
        if result is not None and result.files:
            failure = _store_files(run, result)
            if failure:
                status, outcome = RunStatus.FAILED, "error"
                summary = redact(f"{summary}; {failure}" if summary else failure, secrets)
                CheckRun.objects.filter(pk=run.pk).update(
                    status=status, outcome=outcome, summary=summary[:2000]
                )
        label = RunStatus(status).label.lower()
        verb = "action" if run.step.kind == StepKind.ACTION else "check"
        message = f"{run.step.key} on {run.target_name}: {summary}" if summary else ""
        if status != RunStatus.SUCCEEDED:
            message = f"{run.step.key} on {run.target_name} {label}: {summary}"
        append_event(
            run.incident,
            EventKind.CHECK_RESULT,
            message,
            data={
                "step": run.step.key,
                "run": run.pk,
                "status": status,
                "outcome": outcome,
                "evidence": sorted(evidence),
                "kind": verb,
            },
        )
        signals.check_finished.send(
            sender=CheckRun, run=run, status=status, outcome=outcome, summary=summary
        )
        if run.step.kind == StepKind.ACTION and status == RunStatus.SUCCEEDED and outcome == "ok":
            recheck_after_action(run)
    return True


def recheck_after_action(run: CheckRun) -> list[CheckRun]:
    """Run again, as LotoOps, the checks whose current findings recommended the
    action that just succeeded, on the target of each finding: what they no longer
    find is superseded (the page drops the recommendation and its pids) without
    anyone having to press Run. A check that cannot be queued is left alone."""
    keys = set(run.step.recommended_by)
    if not keys:
        return []
    wanted = {(f.step, f.target) for f in findings(run.incident) if f.current and f.key in keys}
    queued: list[CheckRun] = []
    for step_key, target_name in sorted(wanted):
        step = RunbookStep.objects.filter(key=step_key, kind=StepKind.DIAGNOSTIC).first()
        target = Target.objects.filter(name=target_name, active=True).first()
        if step is None or target is None:
            continue
        try:
            with transaction.atomic():
                queued += request_check(
                    run.incident,
                    step,
                    actor=None,
                    target=target,
                    batch=f"recheck-{run.pk}",
                    because=f"to see whether {run.step.key} (run #{run.pk}) fixed what it found",
                )
        except (CheckError, DatabaseError) as exc:
            log.warning("could not re-check %s after run %s: %s", step_key, run.pk, exc)
    return queued


def _store_files(run: CheckRun, result: ProbeResult) -> str:
    """Store the files a run produced as evidence on its incident, removing each
    temporary file; what went wrong ("" when all were stored)."""
    failures: list[str] = []
    actor = run.confirmed_by or run.requested_by
    for file in result.files:
        try:
            store_file(
                run.incident,
                name=file.name,
                source_path=file.path,
                content_type=file.content_type,
                actor=actor,
                check_run_id=run.pk,
            )
        except (EvidenceError, OSError, DatabaseError) as exc:
            failures.append(f"{file.name} could not be stored as evidence: {exc}")
        finally:
            _discard_files([file])
    return "; ".join(failures)


def _discard_files(result: ProbeResult | Iterable[Any] | None) -> None:
    """Remove a probe's temporary files (stored already, or not to be stored)."""
    files = result.files if isinstance(result, ProbeResult) else (result or [])
    for file in files:
        with contextlib.suppress(OSError):
            os.unlink(file.path)


def reap_stale_runs(now: datetime | None = None, *, max_attempts: int = 2) -> list[int]:
    """Runs whose worker died (no heartbeat past the step's timeout and a grace
    period): retried once more if attempts remain, else failed. Queued runs whose
    message was lost are sent again (the claim makes a double delivery harmless)."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.CHECK_RUN_GRACE)
    reaped: list[int] = []
    running = CheckRun.objects.filter(status=RunStatus.RUNNING).select_related("step", "incident")
    for run in running:
        limit = run.heartbeat_at + timedelta(seconds=run.step.timeout_seconds) + grace
        if now < limit:
            continue
        if run.attempts < max_attempts and run.step.kind == StepKind.DIAGNOSTIC:
            if requeue(run, f"worker {run.worker or '?'} lost mid-run"):
                _enqueue([run])
                reaped.append(run.pk)
        elif finish_run(run, RunStatus.FAILED, error=f"worker {run.worker or '?'} lost mid-run"):
            reaped.append(run.pk)
    stale_queue = now - timedelta(seconds=settings.CHECK_RUN_REQUEUE_AFTER)
    lost = list(
        CheckRun.objects.filter(status=RunStatus.QUEUED, queued_at__lt=stale_queue).select_related(
            "step"
        )
    )
    if lost:
        CheckRun.objects.filter(pk__in=[r.pk for r in lost]).update(queued_at=now)
        _enqueue(lost)
    return reaped
