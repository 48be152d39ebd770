"""A real Celery worker in a subprocess, on Redis, consuming this test session's
queue and using the test database (so it must be PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from diagnostics import queues as queues_module
from diagnostics.models import WorkerHeartbeat
from tests.conftest import TEST_QUEUE, redis_url

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{db['NAME']}"


class Worker:
    def __init__(
        self,
        *,
        concurrency: int = 2,
        include: str = "",
        queues: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`queues`: the classes it consumes (diagnostics/queues.py; default every
        queue of this test session); `env`: settings the worker process needs."""
        self.hostname = f"test-{uuid.uuid4().hex[:6]}@lotoops"
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": redis_url(),
            "CELERY_BROKER_URL": redis_url(),
            "PYTHONUNBUFFERED": "1",
            "CELERY_DEFAULT_QUEUE": TEST_QUEUE,
            **(env or {}),
        }
        consumed = (
            [queues_module.name(kind, TEST_QUEUE) for kind in queues]
            if queues
            else queues_module.all_queues(TEST_QUEUE)
        )
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "lotoops",
            "worker",
            "--loglevel",
            "WARNING",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--queues",
            ",".join(consumed),
            "--hostname",
            self.hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if include:
            command += ["--include", include]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if WorkerHeartbeat.objects.filter(hostname=self.hostname).exists():
                return
            assert self.process.poll() is None, "the worker exited at start-up"
            time.sleep(0.2)
        raise TimeoutError("the worker did not report ready")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, as an OOM killer would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(transactional_db) -> Iterator:
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        from tests.conftest import _missing

        _missing("a real worker shares the test database: set DATABASE_URL=postgres://…")
    workers: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(**kwargs)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    connection.close()
