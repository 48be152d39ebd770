"""Celery tasks of the runbook engine: thin, idempotent, keyed by primary key."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from incidents import logcontext
from incidents.models import ActionItem

from . import approvals, impact, recovery, services
from .models import CheckRun, RunStatus, WorkerHeartbeat
from .probes.base import ProbeError, ProbeTimeout, TransientProbeError

log = logging.getLogger(__name__)

RETRY_BACKOFF = (2, 10, 30)  # seconds before retry 1, 2, 3


@shared_task(ignore_result=True)
def heartbeat(hostname: str | None = None) -> str:
    """Record that a worker is alive (beat sends this every 15 s)."""
    name = hostname or heartbeat.request.hostname or "worker"
    WorkerHeartbeat.objects.update_or_create(hostname=name, defaults={"seen_at": timezone.now()})
    return name


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Visible in /healthz at once, not only after beat's first heartbeat.
    heartbeat(hostname=getattr(sender, "hostname", None))


FLUSH_EVERY = 0.2  # seconds between output flushes while a probe runs
HEARTBEAT_EVERY = 5.0  # seconds between heartbeats of a probe that prints nothing


class _Ticker:
    """One thread per worker process ticks every open OutputWriter: flushes what they
    collected, keeps silent runs' heartbeats fresh. (A thread started and joined per
    run cost more than a fast check itself.) Started on first use in each process,
    so after the prefork pool's fork."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writers: set[OutputWriter] = set()
        self.pid = 0

    def add(self, writer: OutputWriter) -> None:
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.writers = os.getpid(), set()
                threading.Thread(target=self._run, name="check-output", daemon=True).start()
            self.writers.add(writer)

    def remove(self, writer: OutputWriter) -> None:
        with self.lock:
            self.writers.discard(writer)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            with self.lock:
                writers = list(self.writers)
            used_database = False
            for writer in writers:
                try:
                    used_database |= writer.tick()
                except Exception:  # logged; the next tick tries again
                    log.exception("check run %s: output flush failed", writer.run.pk)
            if used_database:
                connection.close()  # back to the pool until the next tick needs one


_ticker = _Ticker()


class OutputWriter:
    """Collects a probe's output lines and flushes them every FLUSH_EVERY s (and keeps
    the run's heartbeat fresh while the probe works silently). What is left when the
    probe ends is stored with its result (`pending`)."""

    def __init__(self, run: CheckRun, secrets: list[str]) -> None:
        self.run = run
        self.secrets = secrets
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.last_flush = time.monotonic()
        self.ticking = threading.Lock()  # held by a tick; closing waits for it
        self.closed = False

    def emit(self, line: str) -> None:
        with self.lock:
            self.buffer.append(line.rstrip("\n") + "\n")
        if time.monotonic() - self.last_flush >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            text, self.buffer = "".join(self.buffer), []
            self.last_flush = time.monotonic()
        services.append_output(self.run, text, self.secrets)

    def tick(self) -> bool:
        """The ticker's turn: whether it used the database."""
        with self.ticking:
            if self.closed:
                return False
            since = time.monotonic() - self.last_flush
            if self.buffer and since >= FLUSH_EVERY:  # a fast run's output waits for its end
                self.flush()
                return True
            if since >= HEARTBEAT_EVERY:
                services.heartbeat(self.run)
                self.last_flush = time.monotonic()
                return True
            return False

    def pending(self) -> str:
        """The lines not flushed yet (taken: finish_run stores them with the result)."""
        with self.lock:
            text, self.buffer = "".join(self.buffer), []
        return text

    def __enter__(self) -> OutputWriter:
        _ticker.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.ticking:  # waits for a tick in progress: no flush after this
            self.closed = True
        _ticker.remove(self)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=len(RETRY_BACKOFF))
def run_check(self: Any, run_id: int) -> str:
    """Claim the run, run its probe under a hard timeout, store the result."""
    with logcontext.bind(check_run=run_id):
        return _run_check(self, run_id)


def _run_check(self: Any, run_id: int) -> str:
    if not services.claim(run_id, self.request.hostname or "worker"):
        return "not queued: already taken or finished"
    run = (
        CheckRun.objects.select_related("step", "target", "incident")
        # Whether an action item waits on this run (verification.py): read here, in the
        # same round trip, so finishing a run that verifies nothing locks nothing.
        .annotate(
            verifies_action_item=Exists(ActionItem.objects.filter(verification_run=OuterRef("pk")))
        )
        .get(pk=run_id)
    )
    logcontext.add(incident=run.incident_id)
    # Read once for the whole run: the output, the result and the timeline mask them.
    secrets = services.known_secrets(run.target)
    probe_class = run.step.probe_class()
    if probe_class is None or run.target is None:
        services.finish_run(run, RunStatus.FAILED, error="probe or target missing", secrets=secrets)
        return "failed"
    # The step may have been edited since the run was queued: a diagnostic run
    # never executes an action probe, and an action runs only with its confirmed plan.
    refusal = run.step.kind_mismatch()
    if not refusal and probe_class.action and not run.plan:
        refusal = f"{run.step.probe} changes the platform and this run has no confirmed plan"
    if not refusal and probe_class.action:
        refusal = approvals.changed_since_approved(run)
    if not refusal and (step_refusal := run.step.run_refusal(run.params)):
        refusal = f"step {run.step.key}: {step_refusal}"
    if not refusal and (target_refusal := run.target.run_refusal()):
        refusal = f"target {run.target.name}: {target_refusal}"
    if refusal:
        services.finish_run(run, RunStatus.FAILED, error=f"refused: {refusal}", secrets=secrets)
        return "refused"
    out = OutputWriter(run, secrets)

    def finish(status: str, **kwargs: Any) -> None:
        # The output not flushed yet goes in the same write as the result.
        services.finish_run(run, status, secrets=secrets, output=out.pending(), **kwargs)

    try:
        with out:
            probe = probe_class.build(
                run.target, run.params, timeout=run.step.timeout_seconds, emit=out.emit
            )
            result = probe.run()
    except SoftTimeLimitExceeded:
        finish(RunStatus.TIMED_OUT, error=f"no result within {run.step.timeout_seconds} s")
        return "timed out"
    except ProbeTimeout as exc:
        finish(RunStatus.TIMED_OUT, error=str(exc))
        return "timed out"
    except TransientProbeError as exc:
        out.flush()  # this attempt's output stays, before the retry's
        if self.request.retries < self.max_retries and services.requeue(run, str(exc)):
            raise self.retry(countdown=RETRY_BACKOFF[self.request.retries]) from None
        finish(RunStatus.FAILED, error=str(exc))
        return "failed"
    except ProbeError as exc:
        finish(RunStatus.FAILED, error=str(exc))
        return "failed"
    except Exception as exc:  # a probe bug: recorded, never left running
        finish(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    finish(RunStatus.SUCCEEDED, result=result)
    return result.outcome


@shared_task(ignore_result=True)
def reap_stale_runs() -> int:
    return len(services.reap_stale_runs())


@shared_task(ignore_result=True)
def expire_approvals() -> int:
    return len(approvals.expire_due())


@shared_task(ignore_result=True)
def sample_money_at_risk() -> int:
    """Beat, every MONEY_AT_RISK_INTERVAL: one money-at-risk sample per open payment or
    banca incident (one per interval however often it runs)."""
    return impact.sample_open_incidents()


@shared_task(ignore_result=True)
def sample_money_at_resolution(incident_id: int, resolved_at: str) -> str:
    """Queued when a payment or banca incident is resolved (on commit): one reading
    of the money at risk at that moment, for the post-mortem's Impact section."""
    sample = impact.sample_at_resolution(incident_id, datetime.fromisoformat(resolved_at))
    if sample is None:
        return "not taken: reopened, resolved again, or read already"
    return f"failed: {sample.error}" if sample.error else "taken"


@shared_task(ignore_result=True)
def start_recovery_round(verification_id: int, number: int) -> str:
    """Round `number` of a recovery verification, once due (the beat's sweep is the
    safety net; of the two, one starts it)."""
    return "started" if recovery.start_round(verification_id, number) else "not due or taken"


@shared_task(ignore_result=True)
def recovery_sweep() -> int:
    """Due second rounds (lost countdowns) and the watch after resolution."""
    due = recovery.due_rounds()
    return sum(recovery.start_round(pk, number) for pk, number in due) + len(
        recovery.start_due_watches()
    )
