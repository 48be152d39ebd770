"""One beat at a time (lotoops/beatlock.py): each lock against its real backend,
then two real beat processes on PostgreSQL: one sends, the other waits; kill the
first and the second takes over; a beat that loses its lock stops at once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from lotoops import beatlock
from tests.conftest import TEST_QUEUE, redis_url
from tests.diagnostics import worker as worker_helpers

ROOT = Path(__file__).resolve().parent.parent
TICK = "beatlock-tick"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


# --- the locks, each against its backend ----------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_postgres_lock_is_held_by_one_connection_until_it_closes():
    name = f"{TEST_QUEUE}.beat-{uuid.uuid4().hex[:6]}"
    first, second = beatlock.PostgresLock(name), beatlock.PostgresLock(name)
    try:
        assert first.try_acquire()
        assert first.confirm() > time.monotonic()
        assert not second.try_acquire()
        assert second.confirm() == 0.0
        first.close()  # as when its beat dies: the server frees the lock as it ends
        wait_for(second.try_acquire, 5, "the lock is freed")
        assert not first.try_acquire()
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_postgres_lock_whose_connection_is_cut_is_lost():
    lock = beatlock.PostgresLock(f"{TEST_QUEUE}.beat-{uuid.uuid4().hex[:6]}")
    try:
        assert lock.try_acquire()
        pid = lock.connection.info.backend_pid
        with psycopg.connect(worker_helpers.test_database_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert lock.confirm() == 0.0
    finally:
        lock.close()


@pytest.mark.redis
def test_a_redis_lock_is_renewed_by_its_holder_and_freed_when_its_lease_runs_out():
    name = f"{TEST_QUEUE}.beat-{uuid.uuid4().hex[:6]}"
    first = beatlock.RedisLock(redis_url(), name, lease=1.0)
    second = beatlock.RedisLock(redis_url(), name, lease=1.0)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        for _ in range(3):  # renewed past its first lease
            time.sleep(0.5)
            assert first.confirm() > time.monotonic()
            assert not second.try_acquire()
        time.sleep(1.2)  # the holder stopped renewing (a dead beat)
        assert second.try_acquire()
        # The old holder learns it lost the lock and does not renew the new one's.
        assert first.confirm() == 0.0
        assert second.confirm() > time.monotonic()
    finally:
        first.client.delete(first.key)


def test_a_file_lock_is_held_by_one_holder(tmp_path):
    path = tmp_path / "celery.beat.lock"
    first, second = beatlock.FileLock(path), beatlock.FileLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    os.close(first.fd)  # as when its process exits
    assert second.try_acquire()


def test_each_installation_gets_the_lock_of_its_backend(tmp_path):
    sqlite, postgres = "django.db.backends.sqlite3", "django.db.backends.postgresql"
    lock = beatlock.lock_for(sqlite, "", tmp_path)
    assert isinstance(lock, beatlock.FileLock)
    assert lock.path == tmp_path / f"{settings.CELERY_TASK_DEFAULT_QUEUE}.beat.lock"
    assert isinstance(
        beatlock.lock_for(sqlite, "redis://127.0.0.1:1/0", tmp_path), beatlock.RedisLock
    )
    assert isinstance(
        beatlock.lock_for(postgres, "redis://127.0.0.1:1/0", tmp_path), beatlock.PostgresLock
    )
    # This session's own installation: PostgreSQL when the suite runs on it.
    expected = (
        beatlock.PostgresLock
        if "postgresql" in settings.DATABASES["default"]["ENGINE"]
        else (beatlock.RedisLock if settings.REDIS_URL else beatlock.FileLock)
    )
    assert isinstance(beatlock.beat_lock(), expected)


def test_the_beat_uses_the_locked_scheduler():
    assert settings.CELERY_BEAT_SCHEDULER == "lotoops.beatlock:LockedDatabaseScheduler"
    assert issubclass(beatlock.LockedDatabaseScheduler, beatlock.DatabaseScheduler)


# --- two real beats ------------------------------------------------------------------


class Beat:
    def __init__(self, log: Path, queue: str) -> None:
        self.log = log
        env = {
            **os.environ,
            "DATABASE_URL": worker_helpers.test_database_url(),
            "REDIS_URL": redis_url(),
            "CELERY_BROKER_URL": redis_url(),
            "CELERY_DEFAULT_QUEUE": queue,
            "PYTHONUNBUFFERED": "1",
            "LOG_FORMAT": "plain",
        }
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "lotoops", "beat", "--loglevel", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text()

    def sent(self) -> int:
        return len(re.findall(rf"Sending due task {TICK} ", self.text()))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=15)
        self.handle.close()


@pytest.fixture
def beats(transactional_db, tmp_path) -> Iterator[Callable[[str], Beat]]:
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        from tests.conftest import _missing

        _missing("beats share the test database: set DATABASE_URL=postgres://…")
    # Their own default queue: their lock, and the tasks they send, are theirs alone.
    queue = f"{TEST_QUEUE}-beatlock-{uuid.uuid4().hex[:6]}"
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=TICK, task="lotoops.tests.beatlock_tick", interval=every_second, queue=queue
    )
    started: list[Beat] = []

    def start(name: str) -> Beat:
        beat = Beat(tmp_path / f"{name}.log", queue)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        if beat.process.poll() is None:
            beat.kill()
    client = redis.Redis.from_url(redis_url())
    for key in client.scan_iter(f"{queue}*"):
        client.delete(key)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_two_beats_never_send_together_and_the_second_takes_over(beats):
    first = beats("first")
    wait_for(lambda: "beat lock acquired" in first.text(), 30, "the first beat holds the lock")
    second = beats("second")
    wait_for(lambda: "another beat holds the lock" in second.text(), 30, "the second beat waits")
    wait_for(lambda: first.sent() >= 3, 30, "the first beat sends")
    # A waiting beat stops when told to (its stop signal does not wait for the lock).
    third = beats("third")
    wait_for(lambda: "another beat holds the lock" in third.text(), 30, "the third beat waits")
    third.kill(signal.SIGTERM)
    assert third.process.returncode == 0
    assert second.sent() == third.sent() == 0
    assert "beat lock acquired" not in second.text()

    first.kill()  # as the OOM killer or a lost node would: no clean exit
    sent_by_first = first.sent()
    took = wait_for(lambda: second.sent() >= 2, 30, "the second beat takes over")
    # The lock is freed as the killed beat's connection closes: the next retry gets it.
    assert took < beatlock.RETRY_SECONDS + 10
    assert "beat lock acquired" in second.text()
    assert first.sent() == sent_by_first


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_beat_that_loses_its_lock_stops_at_once(beats):
    first = beats("first")
    wait_for(lambda: first.sent() >= 1, 30, "the beat sends")
    with psycopg.connect(worker_helpers.test_database_url(), autocommit=True) as admin:
        (pid,) = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'lotoops beat lock'"
            " AND datname = current_database()"
        ).fetchone()
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    first.process.wait(timeout=beatlock.PostgresLock.check_every + 10)
    assert first.process.returncode == beatlock.LOST_EXIT_CODE
    assert "beat lock lost" in first.text()
