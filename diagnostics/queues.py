"""Celery queues, declared here once (for every app: the settings route through
`route` below, and the engine sends each check run to its queue).

- `paging`: escalations, notifications, post-incident reminders. A page to the
  on-call engineer never waits behind diagnostics.
- `checks`: diagnostics and short actions.
- `long`: actions that take minutes (log export, database snapshot, the
  reconciliation script), so they never hold the check workers.
- the default queue: housekeeping (worker heartbeat, the reaper).

Production runs a worker per class (docker-compose.yml, deploy/k8s/); the
embedded default runs one worker on all of them. Names are prefixed by the
default queue when it is not Celery's own "celery" (tests and benchmarks give
each session its own), so every process derives the same names from
CELERY_DEFAULT_QUEUE.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PAGING, CHECKS, LONG = "paging", "checks", "long"
CLASSES = (PAGING, CHECKS, LONG)
# Probes whose runs take minutes (they also get long step timeouts).
LONG_PROBES = frozenset({"kubernetes.export_logs", "kubernetes.exec", "postgres.snapshot"})
LONG_TIMEOUT = 120  # seconds: a step allowed longer than this is a long one
PAGING_TASKS = ("incidents.paging.tasks.", "incidents.postincident.tasks.")


def name(kind: str, default: str | None = None) -> str:
    default = default or settings.CELERY_TASK_DEFAULT_QUEUE
    return kind if default == "celery" else f"{default}.{kind}"


def all_queues(default: str = "celery") -> list[str]:
    """Every queue a worker that does everything consumes (the embedded default)."""
    return [default, *(name(kind, default) for kind in CLASSES)]


def for_check(probe: str, timeout_seconds: int) -> str:
    long = probe in LONG_PROBES or timeout_seconds > LONG_TIMEOUT
    return name(LONG if long else CHECKS)


def route(
    task_name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Celery router (CELERY_TASK_ROUTES): paging tasks to the paging queue. Check
    runs are sent to their queue by the engine, which knows the step."""
    if task_name.startswith(PAGING_TASKS):
        return {"queue": name(PAGING)}
    return None
