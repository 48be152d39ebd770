"""The Celery application: settings come from Django's (CELERY_* names)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_ready

from . import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")

broker.register()  # the embedded default's atomic filesystem transport

app = Celery("lotoops")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each app package with a `tasks` module (paging and post-incident keep their own).
app.autodiscover_tasks(
    ["incidents.paging", "incidents.postincident", "diagnostics", "alerts"], related_name="tasks"
)


@task_prerun.connect
@task_postrun.connect
def _connections_back_to_the_pool(task: Any = None, **_: Any) -> None:
    """A task, like a request, takes a connection from its process's pool and gives it
    back when done (settings.CELERY_DB_REUSE_MAX keeps Celery from closing the pool):
    one dead since (a PostgreSQL restart) is replaced at the next checkout."""
    if task is not None and getattr(task.request, "is_eager", False):
        return  # run in the caller's process (tests, eager mode): its connection
    from django.db import close_old_connections

    close_old_connections()


@worker_ready.connect
def _worker_ready(**_: Any) -> None:
    _mark_ready("worker")


@beat_init.connect
def _beat_ready(**_: Any) -> None:
    _mark_ready("beat")


def _mark_ready(name: str) -> None:
    """Under the run command (lotoops/embedded.py), tell it this process has started:
    it prints the URL and the admin password last, once everything is up."""
    folder = os.environ.get("LOTOOPS_READY_DIR")
    if folder:
        Path(folder, name).touch()
