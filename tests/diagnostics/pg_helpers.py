"""Helpers for the PostgreSQL probe tests: the machine's real server (127.0.0.1:5432,
trust auth, superuser `postgres`), a scratch database, sessions held open in threads,
and a fake server that refuses connections the way PostgreSQL does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

HOST, PORT = "127.0.0.1", 5432
# Overridable so two checkouts can run the suite at once on one server.
DB = os.environ.get("LOTOOPS_PROBE_PG_DB", "lotoops_probe_pg")
ADMIN_URL = f"postgres://postgres@{HOST}:{PORT}/postgres"
DB_URL = f"postgres://postgres@{HOST}:{PORT}/{DB}"
TEST_APP = "pg-probe-test"  # application_name of every session the tests open

PENDING_OLD = 3  # plays pending for over an hour: what pay.pending_plays finds
ODD_TABLE = 'odd"name'


def reachable() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def query(sql: str, params: Any = None, *, url: str = ADMIN_URL) -> list[dict[str, Any]]:
    """Run one statement on a short-lived admin connection (autocommit)."""
    with psycopg.connect(
        url, autocommit=True, row_factory=dict_row, application_name=TEST_APP
    ) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def activity(pid: int) -> dict[str, Any] | None:
    rows = query(
        "SELECT pid, datname, state, wait_event_type, application_name,"
        " extract(epoch FROM now() - query_start)::float8 AS seconds"
        " FROM pg_stat_activity WHERE pid = %s",
        [pid],
    )
    return rows[0] if rows else None


def alive(pid: int) -> bool:
    return activity(pid) is not None


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def create_scratch_db() -> None:
    """The scratch database with a `plays` table (3 stuck, 1 fresh pending, 2 paid),
    a table whose name has a quote, and a SQL function that deletes plays."""
    if not query("SELECT 1 AS found FROM pg_database WHERE datname = %s", [DB]):
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            query(f'CREATE DATABASE "{DB}"')
    statements = [
        "DROP TABLE IF EXISTS plays CASCADE",
        "CREATE TABLE plays (id serial PRIMARY KEY, status text NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now(), note text)",
        "INSERT INTO plays (status, created_at) VALUES"
        " ('pending', now() - interval '2 hours'), ('pending', now() - interval '3 hours'),"
        " ('pending', now() - interval '90 minutes'), ('pending', now()),"
        " ('paid', now() - interval '2 hours'), ('paid', now() - interval '5 hours')",
        'DROP TABLE IF EXISTS "odd""name"',
        'CREATE TABLE "odd""name" (id int)',
        "CREATE OR REPLACE FUNCTION lotoops_sneaky() RETURNS SETOF int LANGUAGE sql"
        " AS 'DELETE FROM plays RETURNING id'",
    ]
    with psycopg.connect(DB_URL, autocommit=True, application_name=TEST_APP) as c:
        for statement in statements:
            c.execute(statement)


def plays_count() -> int:
    return int(query("SELECT count(*) AS n FROM plays", url=DB_URL)[0]["n"])


class Background:
    """A statement running in a thread on its own connection (pid known up front)."""

    def __init__(self, conn: psycopg.Connection[Any], sql: str) -> None:
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql: str) -> None:
        try:
            self.conn.execute(sql)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            self.error = exc

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"background statement of pid {self.pid} still runs"


class Sessions:
    """Connections and background statements a test opens; `close()` terminates
    what is left, joins the threads and closes the connections."""

    def __init__(self) -> None:
        self.conns: list[psycopg.Connection[Any]] = []
        self.background_runs: list[Background] = []

    def open(
        self, *, db: str = DB, app: str = TEST_APP, autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            f"postgres://postgres@{HOST}:{PORT}/{db}",
            autocommit=autocommit,
            application_name=app,
            connect_timeout=2,
        )
        self.conns.append(conn)
        return conn

    def idle(self, *, db: str = DB, app: str = TEST_APP) -> psycopg.Connection[Any]:
        """A session that ran a query and now sits idle."""
        conn = self.open(db=db, app=app)
        conn.execute("SELECT 1")
        return conn

    def background(self, sql: str, *, db: str = DB, app: str = TEST_APP) -> Background:
        run = Background(self.open(db=db, app=app), sql)
        self.background_runs.append(run)
        return run

    def close(self) -> None:
        pids = [c.info.backend_pid for c in self.conns if not c.closed]
        if pids:
            query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            )
        for run in self.background_runs:
            run.thread.join(5)
        for conn in self.conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class FakePostgres:
    """A TCP peer on 127.0.0.1 that speaks just enough of the protocol to refuse every
    connection with one FATAL error, as a real server starting up or out of slots
    does; with `silent=True` it never answers (a connect timeout)."""

    def __init__(
        self,
        code: str = "57P03",
        message: str = "the database system is starting up",
        *,
        silent: bool = False,
    ) -> None:
        self.code, self.message, self.silent = code, message, silent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"postgres://lotolink@127.0.0.1:{self.port}/lotolink"

    def __enter__(self) -> FakePostgres:
        self.sock.listen(8)
        if not self.silent:
            self.sock.settimeout(0.1)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(2)
                with contextlib.suppress(OSError):
                    self._refuse(client)

    def _refuse(self, client: socket.socket) -> None:
        for _ in range(3):  # SSLRequest / GSSENCRequest, then the startup message
            (length,) = struct.unpack("!I", _read(client, 4))
            body = _read(client, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (80877103, 80877104):
                client.sendall(b"N")
                continue
            fields = b"".join(
                key + value.encode() + b"\0"
                for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", self.code))
            )
            fields += b"M" + self.message.encode() + b"\0\0"
            client.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)
            return


def _read(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            raise OSError("peer closed")
        data += chunk
    return data
