"""Celery tasks of the runbook engine: thin, idempotent, keyed by primary key."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.db import connection
from django.utils import timezone

from incidents import logcontext

from . import approvals, impact, services
from .models import CheckRun, RunStatus, WorkerHeartbeat
from .probes.base import ProbeError, ProbeTimeout, TransientProbeError

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


class OutputWriter:
    """Collects a probe's output lines and flushes them every 0.2 s (and keeps
    the run's heartbeat fresh while the probe works silently)."""

    FLUSH_EVERY = 0.2
    HEARTBEAT_EVERY = 5.0

    def __init__(self, run: CheckRun, secrets: list[str]) -> None:
        self.run = run
        self.secrets = secrets
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.last_flush = time.monotonic()
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)

    def emit(self, line: str) -> None:
        with self.lock:
            self.buffer.append(line.rstrip("\n") + "\n")
        if time.monotonic() - self.last_flush >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            text, self.buffer = "".join(self.buffer), []
            self.last_flush = time.monotonic()
        services.append_output(self.run, text, self.secrets)

    def _tick(self) -> None:
        try:
            while not self.stop.wait(self.FLUSH_EVERY):
                if self.buffer:
                    self.flush()
                elif time.monotonic() - self.last_flush >= self.HEARTBEAT_EVERY:
                    services.heartbeat(self.run)
                    self.last_flush = time.monotonic()
        finally:
            connection.close()

    def __enter__(self) -> OutputWriter:
        self.ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.ticker.join(timeout=5)
        self.flush()


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=len(RETRY_BACKOFF))
def run_check(self: Any, run_id: int) -> str:
    """Claim the run, run its probe under a hard timeout, store the result."""
    with logcontext.bind(check_run=run_id):
        return _run_check(self, run_id)


def _run_check(self: Any, run_id: int) -> str:
    if not services.claim(run_id, self.request.hostname or "worker"):
        return "not queued: already taken or finished"
    run = CheckRun.objects.select_related("step", "target", "incident").get(pk=run_id)
    logcontext.add(incident=run.incident_id)
    secrets = services.known_secrets()
    probe_class = run.step.probe_class()
    if probe_class is None or run.target is None:
        services.finish_run(run, RunStatus.FAILED, error="probe or target missing", secrets=secrets)
        return "failed"
    # The step may have been edited since the run was queued: a diagnostic run
    # never executes an action probe, and an action runs only with its confirmed plan.
    refusal = run.step.kind_mismatch()
    if not refusal and probe_class.action and not run.plan:
        refusal = f"{run.step.probe} changes the platform and this run has no confirmed plan"
    if not refusal and (secret_refusal := run.target.secret_refusal()):
        refusal = f"target {run.target.name}: {secret_refusal}"
    if refusal:
        services.finish_run(run, RunStatus.FAILED, error=f"refused: {refusal}", secrets=secrets)
        return "refused"
    try:
        with OutputWriter(run, secrets) as out:
            probe = probe_class.build(
                run.target, run.params, timeout=run.step.timeout_seconds, emit=out.emit
            )
            result = probe.run()
    except SoftTimeLimitExceeded:
        limit = run.step.timeout_seconds
        services.finish_run(
            run, RunStatus.TIMED_OUT, error=f"no result within {limit} s", secrets=secrets
        )
        return "timed out"
    except ProbeTimeout as exc:
        services.finish_run(run, RunStatus.TIMED_OUT, error=str(exc), secrets=secrets)
        return "timed out"
    except TransientProbeError as exc:
        if self.request.retries < self.max_retries and services.requeue(run, str(exc)):
            raise self.retry(countdown=RETRY_BACKOFF[self.request.retries]) from None
        services.finish_run(run, RunStatus.FAILED, error=str(exc), secrets=secrets)
        return "failed"
    except ProbeError as exc:
        services.finish_run(run, RunStatus.FAILED, error=str(exc), secrets=secrets)
        return "failed"
    except Exception as exc:  # a probe bug: recorded, never left running
        error = f"{type(exc).__name__}: {exc}"
        services.finish_run(run, RunStatus.FAILED, error=error, secrets=secrets)
        raise
    services.finish_run(run, RunStatus.SUCCEEDED, result=result, secrets=secrets)
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
