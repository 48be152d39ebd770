"""One beat at a time, whatever starts them: Celery beat takes a lock before it
schedules anything, and a second beat waits for it.

Two beats would send every periodic task twice. An orchestrator's single replica
is not enough (a node that stops answering leaves its pod running while a
replacement starts; someone scales it up; the run command restarts a beat whose
predecessor is still exiting), so the lock lives where every beat of one
installation can see it:

- PostgreSQL: a session advisory lock on a connection of its own (Django's may be
  pooled or closed between ticks). The server releases it when that connection
  ends, so a killed beat frees it at once; server-side TCP keep-alives free it
  within about half a minute when the beat's machine vanishes.
- else Redis: a key holding a random token with a lease, renewed by a thread.
- else (SQLite, the embedded default): `flock` on a file under var/, which the
  kernel releases when the process dies.

The waiting beat retries every few seconds and logs "another beat holds the
lock". The holder checks it still holds the lock (and renews the Redis lease);
when it cannot be sure, it exits at once instead of scheduling beside another
beat, and its supervisor starts it again to wait. Used as the settings'
CELERY_BEAT_SCHEDULER: `lotoops.beatlock:LockedDatabaseScheduler`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import psycopg
import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # a waiting beat tries again this often
WAIT_LOG_SECONDS = 60.0  # ... and says so again this often
REDIS_LEASE_SECONDS = 30.0  # a Redis lock not renewed for this long is free
LOST_EXIT_CODE = 75  # EX_TEMPFAIL: the supervisor restarts the beat, which waits


class BeatLock(Protocol):
    description: str
    check_every: float

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""

    def confirm(self) -> float:
        """Check (and renew) the lock: the monotonic time until which it is known
        to be held, 0 when it is lost."""


def lock_name() -> str:
    # Named after the default queue like the queues themselves (diagnostics/queues.py),
    # so installations (and test sessions) sharing a server do not share a beat.
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}.beat"


class PostgresLock:
    check_every = 5.0

    def __init__(self, name: str) -> None:
        digest = hashlib.sha256(name.encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.description = f"PostgreSQL advisory lock {self.key} ({name})"
        self.connection: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        db = settings.DATABASES["default"]
        connection = psycopg.connect(
            dbname=db["NAME"],
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            connect_timeout=5,
            autocommit=True,
            application_name="lotoops beat lock",
            # The client notices a dead server ...
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        # ... and the server a vanished beat, so its lock is freed in ~25 s, not
        # after the kernel's two-hour default.
        with contextlib.suppress(psycopg.Error):
            connection.execute(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5;"
                " SET tcp_keepalives_count = 3"
            )
        return connection

    def try_acquire(self) -> bool:
        try:
            if self.connection is None or self.connection.closed:
                self.connection = self._connect()
            row = self.connection.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
        except psycopg.Error as exc:
            logger.warning("beat lock: PostgreSQL unreachable (%s)", type(exc).__name__)
            self.close()
            return False
        return bool(row and row[0])

    def confirm(self) -> float:
        # A session lock lasts as long as its connection: it is held while this
        # connection still shows it (pg_locks), and lost with it.
        if self.connection is None:
            return 0.0
        try:
            row = self.connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted"
            ).fetchone()
        except psycopg.Error:
            return 0.0
        return math.inf if row and row[0] else 0.0

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):
                self.connection.close()
        self.connection = None


class RedisLock:
    # Renew only the key that still holds our token: another beat's lock is left alone.
    RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
    )

    def __init__(self, url: str, name: str, lease: float = REDIS_LEASE_SECONDS) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.key = f"lotoops:{name}-lock"
        self.token = secrets.token_hex(16)
        self.lease = lease
        self.check_every = lease / 3
        self.valid_until = 0.0
        self.description = f"Redis lock {self.key} (lease {lease:g} s)"

    def try_acquire(self) -> bool:
        started = time.monotonic()
        try:
            taken = self.client.set(self.key, self.token, nx=True, px=int(self.lease * 1000))
        except redis.RedisError as exc:
            logger.warning("beat lock: Redis unreachable (%s)", type(exc).__name__)
            return False
        # Counted from before the request: the server's lease may have started later.
        self.valid_until = started + self.lease if taken else 0.0
        return bool(taken)

    def confirm(self) -> float:
        started = time.monotonic()
        try:
            renewed = self.client.eval(self.RENEW, 1, self.key, self.token, int(self.lease * 1000))
        except redis.RedisError:
            # Unreachable: the lease taken earlier still runs until it expires.
            return self.valid_until
        self.valid_until = started + self.lease if renewed else 0.0
        return self.valid_until


class FileLock:
    check_every = 60.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file lock {path}"
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a human
        self.fd = fd
        return True

    def confirm(self) -> float:
        # The kernel holds it for this process until it exits.
        return math.inf if self.fd is not None else 0.0


def beat_lock() -> BeatLock:
    """The lock every beat of this installation contends for."""
    return lock_for(
        settings.DATABASES["default"]["ENGINE"], settings.REDIS_URL, Path(settings.VAR_DIR)
    )


def lock_for(engine: str, redis_url: str, var_dir: Path) -> BeatLock:
    if "postgresql" in engine:
        return PostgresLock(lock_name())
    if redis_url:
        return RedisLock(redis_url, lock_name())
    return FileLock(var_dir / f"{lock_name()}.lock")


def acquire(lock: BeatLock, *, retry: float = RETRY_SECONDS) -> None:
    """Wait until `lock` is ours."""
    said = -math.inf
    while not lock.try_acquire():
        if time.monotonic() - said >= WAIT_LOG_SECONDS:
            logger.warning("another beat holds the lock (%s): waiting", lock.description)
            said = time.monotonic()
        time.sleep(retry)
    logger.warning("beat lock acquired (%s): this beat schedules", lock.description)


def lost(lock: BeatLock) -> None:
    """Stop now: another beat may hold the lock, and two must never send."""
    logger.critical("beat lock lost (%s): exiting so that only one beat runs", lock.description)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stderr.flush()
    os._exit(LOST_EXIT_CODE)


class Holder:
    """The lock this process holds, confirmed by a thread; `valid()` is what the
    scheduler asks before each tick."""

    def __init__(self, lock: BeatLock) -> None:
        self.lock = lock
        self.valid_until = lock.confirm()
        self.thread = threading.Thread(target=self._watch, name="beat-lock", daemon=True)
        self.thread.start()

    def valid(self) -> bool:
        # A margin of one check: past it, the lease could expire before the next.
        return time.monotonic() < self.valid_until - self.lock.check_every

    def _watch(self) -> None:
        while True:
            time.sleep(self.lock.check_every)
            self.valid_until = self.lock.confirm()
            if not self.valid():
                lost(self.lock)


_holder: Holder | None = None
_waiting = False


def hold() -> Holder:
    """Take this installation's beat lock once per process (celery builds its
    scheduler more than once), waiting for it."""
    global _holder, _waiting
    if _waiting:
        # Called again while waiting: beat's SIGTERM/SIGINT handler syncs the
        # scheduler it has not built yet. It wants to exit, so exit (waiting again
        # here would never return, and the beat could not be stopped).
        raise SystemExit(0)
    if _holder is None:
        lock = beat_lock()
        _waiting = True
        try:
            acquire(lock)
        finally:
            _waiting = False
        _holder = Holder(lock)
    return _holder


class LockedDatabaseScheduler(DatabaseScheduler):
    """django_celery_beat's scheduler, behind the beat lock: it reads the schedule
    only once the lock is held (so a beat taking over starts from the previous
    one's last runs) and checks the lock before every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Celery builds a lazy instance for its start-up banner: it sends nothing.
        self.holder = None if kwargs.get("lazy") else hold()
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.holder is not None and not self.holder.valid():
            lost(self.holder.lock)
        return super().tick(*args, **kwargs)
