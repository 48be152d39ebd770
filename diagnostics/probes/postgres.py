"""PostgreSQL probes: the runbook's database checks and actions (sections 2 and 3, and
the database reference), one small class per operation.

Every session connects with `connect_timeout` from the step's timeout, sets
`statement_timeout` to what is left of that budget and names itself
`application_name='lotoops-probe'`. Diagnostics and the plans of actions run in a
read-only session; only an action's `run()` gets a read-write one, and what it
terminates is limited to the target's database (the database of its URL).

Outcomes: a finding (evidence) means the runbook's "If: …" condition holds, so the
check is "failing"; "warning" is for what is close to it or only partly done.

The target's role needs `pg_monitor` to see other roles' queries and
`pg_signal_backend` to terminate their backends; without them PostgreSQL hides the
queries and refuses the signal, and we say so.
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row

from incidents.rules.money import format_totals
from incidents.rules.text import format_duration

from .base import (
    Emit,
    Outcome,
    ParamChoice,
    Probe,
    ProbeError,
    ProbeFile,
    ProbeResult,
    ProbeTimeout,
    TargetLike,
    TransientProbeError,
    register,
    seconds_words,
)
from .netguard import checked_addresses, url_hosts
from .redact import redact

APPLICATION_NAME = "lotoops-probe"
QUERY_CHARS = 200  # query text kept per row (output and data)
MAX_CONNECT_TIMEOUT = 30  # seconds: a server that takes longer is retried, not awaited
TERMINATION_WAIT = 2.0  # seconds to watch terminated backends disappear
TEXT_WIDTH = 72  # a query shown beneath its row wraps at this many characters
TEXT_INDENT = "    "

Conn = psycopg.Connection[dict[str, Any]]

# Connection failures carry no SQLSTATE (libpq reports them as text): these mean
# "try again later". Anything else while connecting (refused, unknown role or
# database, wrong password, bad URL) is permanent.
TRANSIENT_TEXT = (
    "timeout expired",
    "timed out",
    "starting up",
    "shutting down",
    "in recovery mode",
    "not yet accepting connections",
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "server closed the connection",
    "connection reset",
    "consuming input failed",
    "could not receive data",
    "could not send data",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",
    "terminating connection",
    "the connection is lost",
    "ssl syscall error",
)
TRANSIENT_SQLSTATES = {
    "57P01",  # admin_shutdown (also: our backend was terminated)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down)
    "53300",  # too_many_connections
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
}


class PostgresProbe(Probe):
    """What every PostgreSQL probe shares: the session, error mapping and scrubbing.

    Subclasses implement `inspect(conn)`; actions also `describe(conn)` for `plan()`.
    """

    target_kind = "postgres"

    def __init__(
        self, target: TargetLike, params: Any, *, timeout: float, emit: Emit | None = None
    ) -> None:
        super().__init__(target, params, timeout=timeout, emit=emit)
        secret = target.secret()
        # The secret as typed and as it appears inside a URL.
        self._secrets = sorted({secret, quote(secret, safe="")} - {""}, key=len, reverse=True)
        raw_emit = self.emit
        self.emit = lambda line: raw_emit(self.scrub(line))
        self.connect_ms = 0.0
        self._deadline = 0.0

    # --- what subclasses provide -------------------------------------------------

    def inspect(self, conn: Conn) -> ProbeResult:
        raise NotImplementedError

    def describe(self, conn: Conn) -> str:
        raise NotImplementedError(f"{self.name} is not an action")

    # --- the probe contract ------------------------------------------------------

    def run(self) -> ProbeResult:
        with self._scrubbed_errors(), self.session(read_only=not self.action) as conn:
            result = self.inspect(conn)
        return ProbeResult(
            result.outcome,
            self.scrub(result.summary),
            self._scrub_json(_jsonable(result.data)),
            self._scrub_json(_jsonable(result.evidence)),
        )

    def plan(self) -> str:
        if not self.action:
            return super().plan()
        with self._scrubbed_errors(), self.session(read_only=True) as conn:
            return self.scrub(self.describe(conn))

    # --- the session ----------------------------------------------------------------

    @property
    def connect_timeout(self) -> int:
        return max(1, min(MAX_CONNECT_TIMEOUT, math.ceil(self.timeout)))

    @contextmanager
    def session(self, *, read_only: bool) -> Iterator[Conn]:
        """A connection in autocommit mode, its statement_timeout set to what is left
        of the budget, read-only unless `read_only` is false. psycopg errors raised
        inside become ProbeError / TransientProbeError / ProbeTimeout."""
        started = time.monotonic()
        self._deadline = started + self.timeout
        pinned = self._checked_address()
        try:
            conn = psycopg.connect(
                self.target.url_with_secret(),
                **pinned,
                connect_timeout=self.connect_timeout,
                application_name=APPLICATION_NAME,
                autocommit=True,
                row_factory=dict_row,
            )
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        self.connect_ms = (time.monotonic() - started) * 1000
        try:
            left_ms = max(1, int((self._deadline - time.monotonic()) * 1000))
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('default_transaction_read_only', %s, false)",
                [str(left_ms), "on" if read_only else "off"],
            )
            yield conn
        except psycopg.Error as exc:
            raise self._query_error(exc) from None
        finally:
            conn.close()

    def _checked_address(self) -> dict[str, str]:
        """Every host of the target's URL checked (netguard) before connecting; a
        single host is connected to at the address checked (libpq's hostaddr, the
        name still verifies TLS), so a name cannot resolve elsewhere in between."""
        hosts = url_hosts(self.target.url)
        addresses = [
            checked_addresses(host or "localhost", port, what=f"target {self.target.name}")
            for host, port in hosts
        ]
        if len(hosts) == 1 and hosts[0][0] and len(addresses[0]) == 1:
            return {"hostaddr": addresses[0][0]}
        return {}  # several addresses: libpq tries them in turn, each was checked

    def _connect_error(self, exc: psycopg.Error) -> ProbeError:
        detail = _one_line(str(exc)).removeprefix("connection failed: ").replace("FATAL: ", "")
        message = self.scrub(f"cannot connect to {self.target.name}: {detail}")
        if isinstance(exc, errors.ConnectionTimeout):
            return TransientProbeError(f"{message} (no answer within {self.connect_timeout} s)")
        if any(text in detail.lower() for text in TRANSIENT_TEXT):
            return TransientProbeError(message)
        return ProbeError(message)

    def _query_error(self, exc: psycopg.Error) -> ProbeError:
        where = self.target.name
        sqlstate = exc.sqlstate or ""
        text = _one_line(exc.diag.message_primary or str(exc))
        if isinstance(exc, errors.QueryCanceled) and "statement timeout" in text:
            return ProbeTimeout(f"{where}: the query timed out after {_seconds(self.timeout)}")
        if isinstance(exc, errors.QueryCanceled):
            return ProbeError(self.scrub(f"{where}: the query was cancelled: {text}"))
        if (
            sqlstate.startswith("08")
            or sqlstate in TRANSIENT_SQLSTATES
            or (not sqlstate and isinstance(exc, psycopg.OperationalError))
        ):
            return TransientProbeError(
                self.scrub(f"{where}: connection lost during the check: {text}")
            )
        if isinstance(exc, errors.UndefinedTable):
            return ProbeError(
                self.scrub(f"{where}: {text} (the table or view the query reads is missing)")
            )
        if isinstance(exc, errors.InsufficientPrivilege):
            return ProbeError(
                self.scrub(f"{where}: permission denied for the target's role: {text}")
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return ProbeError(self.scrub(f"{where}: refused, this check runs read-only: {text}"))
        return ProbeError(self.scrub(f"{where}: {text}"))

    def time_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    # --- secrets --------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        return redact(text, self._secrets)

    def _scrub_json(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self._scrub_json(k): self._scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_json(v) for v in value]
        return value

    @contextmanager
    def _scrubbed_errors(self) -> Iterator[None]:
        try:
            yield
        except ProbeError as exc:
            clean = self.scrub(str(exc))
            if clean != str(exc):
                raise type(exc)(clean) from None
            raise

    # --- output ---------------------------------------------------------------------

    def emit_table(
        self,
        headers: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        text: Sequence[Any] | None = None,
    ) -> None:
        """Aligned plain-text columns, one emitted line per row. `text` (one value
        per row, e.g. its query) goes beneath its row, indented and wrapped at
        TEXT_WIDTH, so a long statement never widens the table past its box and
        stays readable whole."""
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

        self.emit(line(headers))
        self.emit(line(["-" * w for w in widths]))
        for index, row in enumerate(cells):
            self.emit(line(row))
            if text is not None and text[index] not in (None, ""):
                for part in _wrap(_cell(text[index])):
                    self.emit(TEXT_INDENT + part)


class PostgresAction(PostgresProbe):
    action = True


# --- diagnostics ------------------------------------------------------------------------


@register
class SelectOne(PostgresProbe):
    """api.db_connectivity: SELECT 1, its latency and the server's version."""

    name = "postgres.select_one"

    def inspect(self, conn: Conn) -> ProbeResult:
        started = time.monotonic()
        conn.execute("SELECT 1").fetchone()
        query_ms = (time.monotonic() - started) * 1000
        info = _one(
            conn,
            "SELECT current_setting('server_version') AS version, current_database() AS database,"
            " current_user AS user, pg_is_in_recovery() AS standby",
        )
        role = "standby" if info["standby"] else "primary"
        version = str(info["version"]).split()[0]  # "15.20 (Debian 15.20-0+deb12u1)"
        self.emit_table(
            ["check", "result"],
            [
                ("connect", f"{self.connect_ms:.1f} ms"),
                ("SELECT 1", f"{query_ms:.1f} ms"),
                ("server", f"PostgreSQL {info['version']} ({role})"),
                ("database", info["database"]),
                ("user", info["user"]),
            ],
        )
        return ProbeResult(
            Outcome.OK,
            f"SELECT 1 in {query_ms:.1f} ms (connect {self.connect_ms:.0f} ms), "
            f"PostgreSQL {version} {role}",
            data={
                "connect_ms": round(self.connect_ms, 2),
                "query_ms": round(query_ms, 2),
                "server_version": info["version"],
                "server_version_num": conn.info.server_version,
                "database": info["database"],
                "user": info["user"],
                "standby": info["standby"],
            },
        )


@dataclass
class ConnectionCountParams:
    # At or above this share of max_connections the connections are "exhausted";
    # from 80 % of it the check warns.
    exhausted_ratio: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.exhausted_ratio <= 1:
            raise ProbeError("parameter exhausted_ratio must be above 0 and at most 1")


@register
class ConnectionCount(PostgresProbe):
    """api.db_connection_count, init.db_connections: client connections (by state)
    against max_connections."""

    name = "postgres.connection_count"
    Params = ConnectionCountParams

    def run(self) -> ProbeResult:
        try:
            return super().run()
        except TransientProbeError as exc:
            # Refused for lack of slots: that is the very finding.
            if not any(t in str(exc).lower() for t in ("too many", "remaining connection slots")):
                raise
            detail = str(exc).removeprefix(f"cannot connect to {self.target.name}: ")
            summary = f"{self.target.name} refuses new connections: {detail}"
            self.emit(summary)
            details = {"count": None, "max": None, "ratio": None, "refused": True}
            return ProbeResult(
                Outcome.FAILING,
                summary,
                data={"refused": True},
                evidence={"db_connections_exhausted": details},
            )

    def inspect(self, conn: Conn) -> ProbeResult:
        params: ConnectionCountParams = self.params
        rows = _all(
            conn,
            "SELECT coalesce(state, 'hidden') AS state, count(*)::int AS count,"
            " (count(*) FILTER (WHERE datname = current_database()))::int AS in_database"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " GROUP BY 1 ORDER BY 2 DESC, 1",
        )
        limits = _one(
            conn,
            "SELECT current_setting('max_connections')::int AS max,"
            " current_setting('superuser_reserved_connections')::int AS reserved,"
            " current_database() AS database",
        )
        count = sum(r["count"] for r in rows)
        maximum = limits["max"]
        ratio = count / maximum
        self.emit_table(
            ["state", "connections", f"in {limits['database']}"],
            [(r["state"], r["count"], r["in_database"]) for r in rows],
        )
        self.emit(
            f"total {count} of max_connections {maximum} ({ratio:.0%}); "
            f"{limits['reserved']} reserved for superusers"
        )
        data = {
            "count": count,
            "max": maximum,
            "reserved": limits["reserved"],
            "ratio": round(ratio, 4),
            "by_state": {r["state"]: r["count"] for r in rows},
            "database": limits["database"],
            "in_database": sum(r["in_database"] for r in rows),
        }
        summary = f"{count} of {maximum} connections in use ({ratio:.0%})"
        if ratio >= params.exhausted_ratio:
            evidence = {"count": count, "max": maximum, "ratio": round(ratio, 4)}
            return ProbeResult(
                Outcome.FAILING,
                f"{summary}: at or above {params.exhausted_ratio:.0%}, connections exhausted",
                data=data,
                evidence={"db_connections_exhausted": evidence},
            )
        if ratio >= 0.8 * params.exhausted_ratio:
            return ProbeResult(
                Outcome.WARNING,
                f"{summary}: close to the {params.exhausted_ratio:.0%} limit",
                data=data,
            )
        return ProbeResult(Outcome.OK, summary, data=data)


ACTIVITY_COLUMNS = f"""
    pid, usename AS user, application_name, host(client_addr) AS client, state,
    extract(epoch FROM now() - query_start)::float8 AS seconds,
    wait_event_type, wait_event, left(query, {QUERY_CHARS + 1}) AS query
"""


@register
class ActiveQueries(PostgresProbe):
    """db.active_queries: non-idle sessions of the target's database, longest first
    (this check's own session left out)."""

    name = "postgres.active_queries"

    def inspect(self, conn: Conn) -> ProbeResult:
        rows = _all(
            conn,
            f"SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity"  # noqa: S608  (constant)
            " WHERE state <> 'idle' AND pid <> pg_backend_pid()"
            " AND datname = current_database()"
            " ORDER BY query_start NULLS LAST, pid",
        )
        _shorten_queries(rows)
        if not rows:
            self.emit("no non-idle session besides this check")
            return ProbeResult(
                Outcome.OK, f"no active query on {self.target.name}", data={"sessions": []}
            )
        self.emit_table(
            ["pid", "user", "state", "for", "waiting on"],
            [(r["pid"], r["user"], r["state"], _human(r["seconds"]), _wait(r)) for r in rows],
            text=[r["query"] for r in rows],
        )
        longest = rows[0]
        return ProbeResult(
            Outcome.OK,
            f"{_plural(len(rows), 'non-idle session')} on {self.target.name}; longest: "
            f"pid {longest['pid']} ({longest['state']}, {_human(longest['seconds'])})",
            data={"sessions": rows},
        )


@register
class Locks(PostgresProbe):
    """db.locks: locks not granted, who waits and who blocks them (pg_blocking_pids)."""

    name = "postgres.locks"

    def inspect(self, conn: Conn) -> ProbeResult:
        since = "l.waitstart" if conn.info.server_version >= 140000 else "NULL::timestamptz"
        waits = _all(
            conn,
            "SELECT DISTINCT ON (a.pid) a.pid, a.usename AS user, l.locktype, l.mode,"  # noqa: S608
            " l.relation::regclass::text AS relation,"
            f" extract(epoch FROM now() - coalesce({since}, a.state_change))::float8"
            " AS waiting_seconds,"
            " pg_blocking_pids(a.pid) AS blocked_by, left(a.query, %s) AS query"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
            " ORDER BY a.pid",
            [QUERY_CHARS + 1],
        )
        if not waits:
            self.emit("no lock waits")
            return ProbeResult(
                Outcome.OK,
                f"no session waits for a lock on {self.target.name}",
                data={"waits": [], "blockers": [], "root_blockers": []},
            )
        graph = {w["pid"]: list(w["blocked_by"]) for w in waits}
        chains = lock_chains(graph)
        blocker_pids = sorted({pid for w in waits for pid in w["blocked_by"]})
        blockers = _all(
            conn,
            "SELECT pid, usename AS user, state, datname AS database,"
            " extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,"
            " extract(epoch FROM now() - state_change)::float8 AS state_seconds,"
            " left(query, %s) AS query"
            " FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid",
            [QUERY_CHARS + 1, blocker_pids],
        )
        _shorten_queries(waits)
        _shorten_queries(blockers)
        waits.sort(key=lambda w: -(w["waiting_seconds"] or 0))
        self.emit("waiting:")
        self.emit_table(
            ["pid", "user", "waiting", "lock", "blocked by"],
            [
                (w["pid"], w["user"], _human(w["waiting_seconds"]), _lock(w), w["blocked_by"])
                for w in waits
            ],
            text=[w["query"] for w in waits],
        )
        self.emit("blocking:")
        by_pid = {b["pid"]: b for b in blockers}
        self.emit_table(
            ["pid", "user", "state", "in transaction for", "root of"],
            [
                (
                    b["pid"],
                    b["user"],
                    b["state"],
                    _human(b["transaction_seconds"]),
                    chains.get(b["pid"], []),
                )
                for b in blockers
            ],
            text=[b["query"] for b in blockers],
        )
        roots = []
        for pid, blocked in sorted(chains.items(), key=lambda c: (-len(c[1]), c[0])):
            row = by_pid.get(pid, {})
            roots.append(
                {
                    "pid": pid,
                    "blocks": blocked,
                    "user": row.get("user"),
                    "state": row.get("state"),
                    "database": row.get("database"),
                    "transaction_seconds": row.get("transaction_seconds"),
                    "state_seconds": row.get("state_seconds"),
                    "query": row.get("query"),
                }
            )
        for root in roots:
            self.emit(
                f"root blocker: pid {root['pid']} ({_session_state(root)}) holds up "
                f"{_plural(len(root['blocks']), 'session')}: pids {_pid_list(root['blocks'])}"
            )
        waiting_pids = [w["pid"] for w in waits]
        pairs = ", ".join(
            f"{w['pid']} by {', '.join(map(str, w['blocked_by'])) or '?'}" for w in waits
        )
        summary = (
            f"{_plural(len(waits), 'session')} waiting for a lock on {self.target.name}: {pairs}"
        )
        if roots:
            summary += (
                "; root blocker"
                + ("s" if len(roots) > 1 else "")
                + ": "
                + ", ".join(
                    f"pid {r['pid']} ({r['state'] or '?'}, blocks {_pid_list(r['blocks'])})"
                    for r in roots
                )
            )
        return ProbeResult(
            Outcome.FAILING,
            summary,
            data={"waits": waits, "blockers": blockers, "root_blockers": roots},
            evidence={
                "lock_contention": {
                    "waiting_pids": waiting_pids,
                    "blocking_pids": blocker_pids,
                    "root_blockers": roots,
                    "waits": [
                        {
                            "pid": w["pid"],
                            "blocked_by": w["blocked_by"],
                            "seconds": w["waiting_seconds"],
                        }
                        for w in waits
                    ],
                }
            },
        )


def lock_chains(blocked_by: dict[int, list[int]]) -> dict[int, list[int]]:
    """The root blockers of the lock-wait graph (waiting pid -> the pids it waits on,
    as pg_blocking_pids says) and, for each, every waiting pid it holds up, directly
    or through other waiters. A root blocks others and waits on nobody; a cycle
    (a deadlock PostgreSQL has not broken yet) has no root and is left out.
    pid 0 stands for a prepared transaction: it is a root, but no session."""
    roots: dict[int, set[int]] = {}
    for waiter in blocked_by:
        seen: set[int] = set()
        stack = list(blocked_by[waiter])
        while stack:
            pid = stack.pop()
            if pid in seen or pid == waiter:
                continue
            seen.add(pid)
            above = blocked_by.get(pid, [])
            if above:
                stack.extend(above)
            else:
                roots.setdefault(pid, set()).add(waiter)
    return {pid: sorted(waiters) for pid, waiters in sorted(roots.items())}


@dataclass
class SlowQueriesParams:
    # Seconds a query has been running (state active) before it counts as slow.
    min_seconds: float = 300

    def __post_init__(self) -> None:
        if self.min_seconds < 0:
            raise ProbeError("parameter min_seconds must be 0 or more")


@register
class SlowQueries(PostgresProbe):
    """db.slow_queries: queries of client sessions on the target's database that
    have been *running* (state active) for over `min_seconds`.

    What pg_stat_activity shows for the others, and why they are left out:
    an idle-in-transaction session's `query` is its last statement, finished long
    ago (db.idle_in_transaction finds those); a session waiting for a lock is
    active but stuck behind another (db.locks names the root of its chain); this
    check's own session is not the problem."""

    name = "postgres.slow_queries"
    Params = SlowQueriesParams

    def inspect(self, conn: Conn) -> ProbeResult:
        params: SlowQueriesParams = self.params
        rows = _all(
            conn,
            f"SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity"  # noqa: S608  (constant)
            " WHERE state = 'active' AND backend_type = 'client backend'"
            " AND wait_event_type IS DISTINCT FROM 'Lock'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
            " AND query_start < now() - %s::float8 * interval '1 second'"
            " ORDER BY query_start, pid",
            [float(params.min_seconds)],
        )
        left_out = _one(
            conn,
            "SELECT count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock')::int"
            " AS lock_waits, count(*) FILTER (WHERE state LIKE 'idle in transaction%%')::int"
            " AS idle_in_transaction FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND datname = current_database()"
            " AND pid <> pg_backend_pid()"
            " AND coalesce(query_start, state_change) < now() - %s::float8 * interval '1 second'",
            [float(params.min_seconds)],
        )
        _shorten_queries(rows)
        limit = seconds_words(params.min_seconds)
        notes = []
        if left_out["lock_waits"]:
            notes.append(
                f"{_plural(left_out['lock_waits'], 'session')} waiting for a lock "
                "(not counted: see db.locks)"
            )
        if left_out["idle_in_transaction"]:
            notes.append(
                f"{_plural(left_out['idle_in_transaction'], 'session')} idle in transaction "
                "(not counted: see db.idle_in_transaction)"
            )
        data = {"queries": rows, "min_seconds": params.min_seconds, **left_out}
        if not rows:
            self.emit(f"no query running longer than {limit}")
            for note in notes:
                self.emit(note)
            return ProbeResult(
                Outcome.OK,
                f"no query running longer than {limit} on {self.target.name}",
                data=data,
            )
        self.emit_table(
            ["pid", "user", "running for", "waiting on"],
            [(r["pid"], r["user"], _human(r["seconds"]), _wait(r)) for r in rows],
            text=[r["query"] for r in rows],
        )
        for note in notes:
            self.emit(note)
        pids = [r["pid"] for r in rows]
        return ProbeResult(
            Outcome.FAILING,
            f"{_plural(len(rows), 'query', 'queries')} running longer than {limit}: "
            f"pid{'s' if len(pids) > 1 else ''} {_pid_list(pids)}",
            data=data,
            evidence={
                "long_running_queries": {
                    "pids": pids,
                    "min_seconds": params.min_seconds,
                    "queries": [
                        {"pid": r["pid"], "seconds": r["seconds"], "query": r["query"]}
                        for r in rows
                    ],
                }
            },
        )


IDLE_IN_TRANSACTION_WHERE = """
    datname = current_database() AND backend_type = 'client backend'
    AND state IN ('idle in transaction', 'idle in transaction (aborted)')
    AND pid <> pg_backend_pid()
    AND state_change < now() - %s::float8 * interval '1 second'
"""


@dataclass
class IdleInTransactionParams:
    # Seconds a session has sat idle inside an open transaction before it counts.
    min_seconds: float = 300

    def __post_init__(self) -> None:
        if self.min_seconds < 0:
            raise ProbeError("parameter min_seconds must be 0 or more")


def _idle_in_transaction(conn: Conn, min_seconds: float) -> list[dict[str, Any]]:
    """Sessions of the target's database idle in an open transaction for over
    `min_seconds`, longest idle first, with the pids waiting on their locks."""
    rows = _all(
        conn,
        "SELECT pid, usename AS user, application_name, host(client_addr) AS client, state,"  # noqa: S608
        " extract(epoch FROM now() - state_change)::float8 AS idle_seconds,"
        " extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,"
        " left(query, %s) AS query,"
        " ARRAY(SELECT w.pid FROM pg_stat_activity w"
        "       WHERE a.pid = ANY(pg_blocking_pids(w.pid)) ORDER BY w.pid) AS blocking"
        f" FROM pg_stat_activity a WHERE {IDLE_IN_TRANSACTION_WHERE}"
        " ORDER BY state_change, pid",
        [QUERY_CHARS + 1, float(min_seconds)],
    )
    _shorten_queries(rows)
    return rows


@register
class IdleInTransaction(PostgresProbe):
    """db.idle_in_transaction: sessions idle inside an open transaction for over
    `min_seconds`: they hold their locks and snapshot (blocking VACUUM) while doing
    nothing. Their `query` is the last statement they ran, finished already."""

    name = "postgres.idle_in_transaction"
    Params = IdleInTransactionParams

    def inspect(self, conn: Conn) -> ProbeResult:
        params: IdleInTransactionParams = self.params
        rows = _idle_in_transaction(conn, params.min_seconds)
        limit = seconds_words(params.min_seconds)
        data = {"sessions": rows, "min_seconds": params.min_seconds}
        if not rows:
            self.emit(f"no session idle in transaction for longer than {limit}")
            return ProbeResult(
                Outcome.OK,
                f"no session idle in transaction for longer than {limit} on {self.target.name}",
                data=data,
            )
        self.emit_table(
            ["pid", "user", "application", "idle for", "in transaction for", "blocking"],
            [
                (
                    r["pid"],
                    r["user"],
                    r["application_name"],
                    _human(r["idle_seconds"]),
                    _human(r["transaction_seconds"]),
                    r["blocking"],
                )
                for r in rows
            ],
            text=[f"last statement (finished): {r['query']}" for r in rows],
        )
        pids = [r["pid"] for r in rows]
        return ProbeResult(
            Outcome.FAILING,
            f"{_plural(len(rows), 'session')} idle in transaction for longer than {limit} on "
            f"{self.target.name}: pid{'s' if len(pids) > 1 else ''} {_pid_list(pids)}",
            data=data,
            evidence={
                "idle_in_transaction": {
                    "pids": pids,
                    "min_seconds": params.min_seconds,
                    "sessions": [
                        {
                            "pid": r["pid"],
                            "idle_seconds": r["idle_seconds"],
                            "blocking": r["blocking"],
                            "query": r["query"],
                        }
                        for r in rows
                    ],
                }
            },
        )


@register
class Replication(PostgresProbe):
    """ref.replication: the replicas connected to a primary (pg_stat_replication), or
    on a standby, its WAL receiver."""

    name = "postgres.replication"

    def inspect(self, conn: Conn) -> ProbeResult:
        if _one(conn, "SELECT pg_is_in_recovery() AS standby")["standby"]:
            return self._standby(conn)
        rows = _all(
            conn,
            "SELECT pid, usename AS user, application_name, host(client_addr) AS client,"
            " state, sync_state,"
            " extract(epoch FROM write_lag)::float8 AS write_lag_seconds,"
            " extract(epoch FROM flush_lag)::float8 AS flush_lag_seconds,"
            " extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_lag_bytes"
            " FROM pg_stat_replication ORDER BY application_name, pid",
        )
        if not rows:
            self.emit("no replicas connected")
            return ProbeResult(Outcome.OK, "no replicas connected", data={"replicas": []})
        self.emit_table(
            ["client", "name", "state", "sync", "write lag", "flush lag", "replay lag", "behind"],
            [
                (
                    r["client"] or "local",
                    r["application_name"],
                    r["state"],
                    r["sync_state"],
                    _human(r["write_lag_seconds"]),
                    _human(r["flush_lag_seconds"]),
                    _human(r["replay_lag_seconds"]),
                    _bytes(r["replay_lag_bytes"]),
                )
                for r in rows
            ],
        )
        lagging = [r for r in rows if r["state"] != "streaming"]
        worst = max((r["replay_lag_seconds"] or 0) for r in rows)
        summary = f"{_plural(len(rows), 'replica')} connected, replay lag up to {_human(worst)}"
        if lagging:
            states = ", ".join(f"{r['client'] or 'local'} {r['state']}" for r in lagging)
            return ProbeResult(
                Outcome.WARNING, f"{summary}; not streaming: {states}", data={"replicas": rows}
            )
        return ProbeResult(Outcome.OK, summary, data={"replicas": rows})

    def _standby(self, conn: Conn) -> ProbeResult:
        receiver = _all(
            conn,
            "SELECT status, sender_host, sender_port,"
            " extract(epoch FROM now() - last_msg_receipt_time)::float8 AS last_message_seconds,"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
            " AS replay_delay_seconds FROM pg_stat_wal_receiver",
        )
        if not receiver:
            self.emit("standby without a running WAL receiver")
            return ProbeResult(
                Outcome.WARNING,
                f"{self.target.name} is a standby and its WAL receiver is not running",
                data={"standby": True, "receiver": None},
            )
        r = receiver[0]
        self.emit_table(
            ["status", "sender", "last message", "replay delay"],
            [
                (
                    r["status"],
                    f"{r['sender_host']}:{r['sender_port']}",
                    _human(r["last_message_seconds"]),
                    _human(r["replay_delay_seconds"]),
                )
            ],
        )
        outcome = Outcome.OK if r["status"] == "streaming" else Outcome.WARNING
        return ProbeResult(
            outcome,
            f"{self.target.name} is a standby: WAL receiver {r['status']} from "
            f"{r['sender_host']}, replay {_human(r['replay_delay_seconds'])} behind",
            data={"standby": True, "receiver": r},
        )


@dataclass
class TableSizesParams:
    limit: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 1000:
            raise ProbeError("parameter limit must be between 1 and 1000")


@register
class TableSizes(PostgresProbe):
    """ref.table_sizes: the runbook's query, largest tables first."""

    name = "postgres.table_sizes"
    Params = TableSizesParams

    def inspect(self, conn: Conn) -> ProbeResult:
        params: TableSizesParams = self.params
        rows = _all(
            conn,
            "SELECT schemaname AS schema, relname AS table,"
            " pg_total_relation_size(relid) AS total_bytes,"
            " pg_size_pretty(pg_total_relation_size(relid)) AS total_size"
            " FROM pg_catalog.pg_statio_user_tables"
            " ORDER BY pg_total_relation_size(relid) DESC, schemaname, relname LIMIT %s",
            [params.limit],
        )
        if not rows:
            self.emit("no user tables")
            return ProbeResult(Outcome.OK, "no user tables", data={"tables": []})
        self.emit_table(
            ["table", "total size"],
            [(f"{r['schema']}.{r['table']}", r["total_size"]) for r in rows],
        )
        top = rows[0]
        return ProbeResult(
            Outcome.OK,
            f"{_plural(len(rows), 'table')} listed; largest {top['schema']}.{top['table']} "
            f"({top['total_size']})",
            data={"tables": rows},
        )


@dataclass
class CountQueryParams:
    sql: str
    evidence: str
    threshold: int = 1
    label: str = "rows"

    def __post_init__(self) -> None:
        check_count_sql(self.sql)
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,59}", self.evidence):
            raise ProbeError("parameter evidence must be a key like plays_stuck")
        if self.threshold < 1:
            raise ProbeError("parameter threshold must be 1 or more")
        if not self.label.strip():
            raise ProbeError("parameter label must not be empty")


@register
class CountQuery(PostgresProbe):
    """pay.pending_plays and the like: an admin-written SELECT returning one number,
    run in a READ ONLY transaction that is always rolled back; the evidence named by
    `evidence` is found when the number reaches `threshold`."""

    name = "postgres.count_query"
    Params = CountQueryParams

    def inspect(self, conn: Conn) -> ProbeResult:
        params: CountQueryParams = self.params
        statement = check_count_sql(params.sql)
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            # binary=True forces the extended protocol: the server itself refuses
            # more than one statement, whatever our check above missed.
            cursor = conn.execute(statement, binary=True)
            if cursor.description is None or len(cursor.description) != 1:
                raise ProbeError("the count query must return exactly one column")
            rows = cursor.fetchmany(2)
        if len(rows) != 1:
            raise ProbeError(f"the count query must return exactly one row, not {len(rows)}")
        count = _number(next(iter(rows[0].values())))
        self.emit_table([params.label, "threshold"], [(count, params.threshold)])
        data = {"count": count, "threshold": params.threshold, "label": params.label}
        summary = f"{_cell(count)} {params.label}"
        if count >= params.threshold:
            return ProbeResult(
                Outcome.FAILING,
                f"{summary} (threshold {params.threshold})",
                data=data,
                evidence={params.evidence: {"count": count, "threshold": params.threshold}},
            )
        return ProbeResult(Outcome.OK, summary, data=data)


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
MONEY_GROUPS_KEPT = 50  # per currency, in the per-banca and per-state tables


def _identifier(value: str, what: str, *, dotted: bool = False) -> sql.Composable:
    parts = value.split(".") if dotted else [value]
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ProbeError(f"parameter {what} must be a column or table name, not {value!r}")
    return sql.Identifier(*parts)


@dataclass
class MoneyAtRiskParams:
    """Where the platform keeps its plays. Amounts are integer minor units (cents),
    as Stripe charges them; the Stripe state is the PaymentIntent status the
    platform recorded for the play."""

    table: str = "plays"
    status_column: str = "status"
    pending_value: str = "pending"
    created_column: str = "created_at"
    amount_column: str = "amount"
    currency_column: str = "currency"
    banca_column: str = "banca"
    stripe_state_column: str = "stripe_status"
    user_column: str = "user_id"
    window_minutes: int = 60
    short_window_minutes: int = 15

    def __post_init__(self) -> None:
        _identifier(self.table, "table", dotted=True)
        for name in ("status", "created", "amount", "currency", "banca", "stripe_state", "user"):
            _identifier(getattr(self, f"{name}_column"), f"{name}_column")
        if not 1 <= self.window_minutes <= 7 * 24 * 60:
            raise ProbeError("parameter window_minutes must be between 1 and 10080 (a week)")
        if not 1 <= self.short_window_minutes < self.window_minutes:
            raise ProbeError(
                "parameter short_window_minutes must be 1 or more and shorter than window_minutes"
            )


@register
class MoneyAtRisk(PostgresProbe):
    """The money at risk: plays pending longer than `short_window_minutes` and than
    `window_minutes` (the runbook's hour), their count, players and amount per
    currency, per banca and per Stripe state, in one read-only query. Amounts are
    summed by PostgreSQL and kept as integers: never a float."""

    name = "postgres.money_at_risk"
    Params = MoneyAtRiskParams

    def inspect(self, conn: Conn) -> ProbeResult:
        p: MoneyAtRiskParams = self.params
        col = {
            name: _identifier(getattr(p, f"{name}_column"), name)
            for name in ("status", "created", "amount", "currency", "banca", "stripe_state", "user")
        }
        is_long = sql.SQL("{created} < now() - %(long)s * interval '1 minute'").format(
            created=col["created"]
        )
        statement = sql.SQL(
            "SELECT upper({currency}::text) AS currency, {banca}::text AS banca,"
            " {state}::text AS state, GROUPING(upper({currency}::text), {banca}, {state}) AS grp,"
            " count(*) FILTER (WHERE {is_long}) AS long_count,"
            " coalesce(sum({amount}) FILTER (WHERE {is_long}), 0) AS long_amount,"
            " count(DISTINCT {user}) FILTER (WHERE {is_long}) AS long_users,"
            " count(*) AS short_count, coalesce(sum({amount}), 0) AS short_amount,"
            " count(DISTINCT {user}) AS short_users"
            " FROM {table}"
            " WHERE {status} = %(pending)s AND {created} < now() - %(short)s * interval '1 minute'"
            " GROUP BY GROUPING SETS ((upper({currency}::text)),"
            " (upper({currency}::text), {banca}), (upper({currency}::text), {state}), ())"
        ).format(
            currency=col["currency"],
            banca=col["banca"],
            state=col["stripe_state"],
            amount=col["amount"],
            user=col["user"],
            status=col["status"],
            created=col["created"],
            table=_identifier(p.table, "table", dotted=True),
            is_long=is_long,
        )
        args = {
            "long": p.window_minutes,
            "short": p.short_window_minutes,
            "pending": p.pending_value,
        }
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            rows = conn.execute(statement, args).fetchall()
        data = _money_data(rows, p)
        self._emit_money(data)
        long_n, short_n = data["plays"]["long"], data["plays"]["short"]
        summary = (
            f"{_plural(long_n, 'play')} pending over {p.window_minutes} min "
            f"({_money_text(data['totals'], 'long')}), {short_n} over "
            f"{p.short_window_minutes} min ({_money_text(data['totals'], 'short')})"
        )
        if long_n:
            evidence = {"plays_stuck": {"count": long_n, "source": "platform database"}}
            return ProbeResult(Outcome.FAILING, summary, data=data, evidence=evidence)
        return ProbeResult(Outcome.WARNING if short_n else Outcome.OK, summary, data=data)

    def _emit_money(self, data: dict[str, Any]) -> None:
        self.emit_table(
            ["currency", "plays > long", "amount > long", "plays > short", "amount > short"],
            [
                (c, t["long_count"], t["long"], t["short_count"], t["short"])
                for c, t in sorted(data["totals"].items())
            ],
        )


def _whole(value: Any, what: str) -> int:
    """An exact integer from PostgreSQL's sum (numeric for bigint columns)."""
    number = Decimal(value)
    if number != number.to_integral_value():
        raise ProbeError(f"the {what} column must hold whole minor units (cents), found {number}")
    return int(number)


def _money_data(rows: list[dict[str, Any]], p: MoneyAtRiskParams) -> dict[str, Any]:
    totals: dict[str, dict[str, int]] = {}
    by_banca: list[dict[str, Any]] = []
    by_state: list[dict[str, Any]] = []
    plays = {"long": 0, "short": 0}
    users = {"long": 0, "short": 0}
    for row in rows:
        figures = {
            "long": _whole(row["long_amount"], "amount"),
            "short": _whole(row["short_amount"], "amount"),
            "long_count": int(row["long_count"]),
            "short_count": int(row["short_count"]),
        }
        currency = row["currency"] or "(none)"
        if row["grp"] == 7:
            # the grand total: () groups every currency (its amounts are not added up)
            plays = {"long": figures["long_count"], "short": figures["short_count"]}
            users = {"long": int(row["long_users"]), "short": int(row["short_users"])}
            continue
        if row["grp"] == 3:
            totals[currency] = figures | {
                "long_users": int(row["long_users"]),
                "short_users": int(row["short_users"]),
            }
        elif row["grp"] == 1:
            by_banca.append({"banca": row["banca"] or "(none)", "currency": currency} | figures)
        elif row["grp"] == 2:
            by_state.append({"state": row["state"] or "(none)", "currency": currency} | figures)
    order = lambda r: (r["currency"], -r["short"], str(r.get("banca") or r.get("state")))  # noqa: E731
    return {
        "window_minutes": p.window_minutes,
        "short_window_minutes": p.short_window_minutes,
        "plays": plays,
        "users": users,
        "totals": totals,
        "by_banca": _kept(sorted(by_banca, key=order)),
        "by_state": _kept(sorted(by_state, key=order)),
    }


def _kept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[row["currency"]] = seen.get(row["currency"], 0) + 1
        if seen[row["currency"]] <= MONEY_GROUPS_KEPT:
            kept.append(row)
    return kept


def _money_text(totals: dict[str, dict[str, int]], which: str) -> str:
    return format_totals({c: t[which] for c, t in totals.items()})


# Words that make a SELECT write, lock or leave its transaction, and functions that act
# on the server rather than read it. A best effort on top of the READ ONLY transaction;
# the real guard is a target role without such privileges.
WRITING_WORDS = {"insert", "update", "delete", "merge", "into", "copy"}
ACTING_FUNCTIONS = re.compile(
    r"pg_(terminate|cancel)_backend|pg_reload_conf|pg_rotate_logfile\w*|pg_promote"
    r"|pg_switch_wal|pg_create_\w+|pg_drop_\w+|pg_replication_\w+|pg_(try_)?advisory\w*"
    r"|pg_stat_reset\w*|pg_file_\w+|pg_read_(binary_)?file|pg_ls_\w+|pg_log_\w+|pg_notify"
    r"|pg_backup_\w+|pg_(start|stop)_backup|pg_import_system_collations|set_config|lo_\w+"
    r"|dblink\w*|\w+_to_xml\w*"
)


def check_count_sql(text: str) -> str:
    """Refuse anything but one SELECT (or WITH … SELECT) statement; return it without
    a trailing semicolon. Literals, quoted names and comments are skipped, so a `;`
    or a keyword inside them does not count."""
    words: list[tuple[str, bool]] = []  # (word, was quoted)
    end: int | None = None  # where a top-level `;` ended the statement
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith("--", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        if end is not None:
            raise ProbeError("the count query must be a single statement: remove what follows ;")
        if c == ";":
            end = i
            i += 1
        elif c == "'":
            i = _skip_quoted(text, i, "'", backslashes=False)
        elif c == '"':
            close = _skip_quoted(text, i, '"', backslashes=False)
            words.append((text[i + 1 : close - 1].replace('""', '"').lower(), True))
            i = close
        elif c == "$" and (m := re.match(r"\$([A-Za-z_]\w*)?\$", text[i:])):
            close = text.find(m.group(0), i + len(m.group(0)))
            if close < 0:
                raise ProbeError("the count query has an unterminated $-quoted string")
            i = close + len(m.group(0))
        elif c.isalpha() or c == "_":
            m = re.match(r"[^\W\d][\w$]*", text[i:])
            word = m.group(0) if m else c
            i += len(word)
            if word.lower() == "u" and text.startswith("&", i):
                raise ProbeError("the count query may not use U& escaped strings or names")
            if word.lower() == "e" and text.startswith("'", i):
                i = _skip_quoted(text, i, "'", backslashes=True)
                continue
            words.append((word.lower(), False))
        else:
            i += 1
    plain = [w for w, quoted in words if not quoted]
    if not plain or plain[0] not in ("select", "with"):
        raise ProbeError("the count query must be a single SELECT statement")
    if found := sorted(WRITING_WORDS.intersection(plain)):
        raise ProbeError(
            f"the count query may only read: {', '.join(w.upper() for w in found)} not allowed"
        )
    acting = sorted({w for w, _ in words if ACTING_FUNCTIONS.fullmatch(w)})
    if acting:
        raise ProbeError(f"the count query may not call {', '.join(acting)}")
    return text[:end].strip() if end is not None else text.strip()


def _skip_quoted(text: str, start: int, quote_char: str, *, backslashes: bool) -> int:
    """Index just past the literal or quoted name opening at `start` (doubled quotes,
    and backslash escapes in E'' strings, stay inside)."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if backslashes and c == "\\":
            i += 2
            continue
        if c == quote_char:
            if text.startswith(quote_char, i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    raise ProbeError("the count query has an unterminated quoted string or name")


def _skip_block_comment(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise ProbeError("the count query has an unterminated /* comment")


# --- actions -------------------------------------------------------------------------


IDLE_WHERE = """
    datname = current_database() AND backend_type = 'client backend' AND state = 'idle'
    AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM 'lotoops-probe'
    AND coalesce(state_change, query_start, backend_start)
        < now() - %s::float8 * interval '1 second'
"""


@dataclass
class KillIdleParams:
    # Minutes idle; fractions allowed (0.5 = 30 s).
    idle_minutes: float = 30
    # The pids the reviewed plan named (set by the review): only those, if still idle.
    pids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.idle_minutes < 0:
            raise ProbeError("parameter idle_minutes must be 0 or more")


@register
class KillIdleConnections(PostgresAction):
    """api.kill_idle_connections: terminate the client sessions of the target's
    database idle for longer than `idle_minutes` (never this session, never another
    database's)."""

    name = "postgres.kill_idle_connections"
    Params = KillIdleParams

    def _idle(self, conn: Conn) -> list[dict[str, Any]]:
        return _all(
            conn,
            "SELECT pid, usename AS user, application_name, host(client_addr) AS client,"  # noqa: S608
            " extract(epoch FROM now() - state_change)::float8 AS idle_seconds,"
            f" current_database() AS database FROM pg_stat_activity WHERE {IDLE_WHERE}"
            " ORDER BY state_change, pid",
            [self._idle_seconds],
        )

    @property
    def _idle_seconds(self) -> float:
        return float(self.params.idle_minutes) * 60

    @property
    def _idle_text(self) -> str:
        return f"idle for more than {self.params.idle_minutes:g} min"

    def describe(self, conn: Conn) -> str:
        rows = _named(self._idle(conn), self.params.pids)
        self.bound = {"pids": [r["pid"] for r in rows]}
        database = conn.info.dbname
        if not rows:
            return (
                f"terminate nothing: no connection to {database} on {self.target.name} "
                f"is {self._idle_text}"
            )
        return (
            f"terminate {_plural(len(rows), 'connection')} {self._idle_text} on "
            f"{self.target.name} (database {database}): pids {_pid_list(r['pid'] for r in rows)}"
        )

    def inspect(self, conn: Conn) -> ProbeResult:
        found = self._idle(conn)
        rows = _named(found, self.params.pids)
        terminated: list[int] = []
        # Named by the plan but no longer idle (or gone): left alone.
        skipped = _not_found(found, self.params.pids)
        refused: list[dict[str, Any]] = []
        for row in rows:
            try:
                done = conn.execute(
                    "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"  # noqa: S608
                    f" WHERE pid = %s AND {IDLE_WHERE}",
                    [row["pid"], self._idle_seconds],
                ).fetchone()
            except errors.InsufficientPrivilege as exc:
                refused.append({"pid": row["pid"], "error": _one_line(str(exc))})
                continue
            if done and done["done"]:
                terminated.append(row["pid"])
            else:
                skipped.append(row["pid"])  # busy again, or gone, since we looked
        still = _wait_gone(conn, terminated, min(TERMINATION_WAIT, self.time_left()))
        by_pid = {r["pid"]: r for r in rows}
        if terminated:
            self.emit_table(
                ["pid", "user", "application", "client", "idle for"],
                [
                    (
                        p,
                        by_pid[p]["user"],
                        by_pid[p]["application_name"],
                        by_pid[p]["client"],
                        _human(by_pid[p]["idle_seconds"]),
                    )
                    for p in terminated
                ],
            )
        for item in refused:
            self.emit(f"pid {item['pid']} not terminated: {item['error']}")
        if skipped:
            self.emit(f"no longer idle, left alone: pids {_pid_list(skipped)}")
        if still:
            self.emit(f"still present after {TERMINATION_WAIT:g} s: pids {_pid_list(still)}")
        data = {
            "database": conn.info.dbname,
            "idle_minutes": self.params.idle_minutes,
            "terminated": terminated,
            "skipped": skipped,
            "refused": refused,
            "still_present": still,
        }
        if not terminated and not refused:
            return ProbeResult(
                Outcome.OK, f"no connection {self._idle_text} on {self.target.name}", data=data
            )
        summary = (
            f"terminated {_plural(len(terminated), 'idle connection')} on {self.target.name}"
            + (f": pids {_pid_list(terminated)}" if terminated else "")
        )
        if refused or still:
            summary += f"; {len(refused)} refused, {len(still)} still present"
            return ProbeResult(Outcome.WARNING, summary, data=data)
        return ProbeResult(Outcome.OK, summary, data=data)


@dataclass
class TerminateQueryParams:
    pid: int | None = None

    def __post_init__(self) -> None:
        if self.pid is not None and self.pid <= 0:
            raise ProbeError("parameter pid must be a positive process id")


@register
class TerminateQuery(PostgresAction):
    """db.terminate_query: pg_terminate_backend of one running query's backend, on the
    target's database (not an idle session, not this check's own)."""

    name = "postgres.terminate_query"
    Params = TerminateQueryParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        """The pid is picked from the latest db.slow_queries result, never typed."""
        found = evidence.get("long_running_queries", {})
        queries = found.get("details", {}).get("queries", [])
        options = tuple(
            (
                int(q["pid"]),
                f"pid {q['pid']} ({int(q.get('seconds', 0))} s): {str(q.get('query', ''))[:80]}",
            )
            for q in queries
        )
        return [
            ParamChoice(
                "pid", "Query", help="From the latest db.slow_queries result", options=options
            )
        ]

    def running_backend(self, conn: Conn) -> dict[str, Any]:
        """The backend to terminate, or ProbeError saying why it may not be."""
        pid = self.params.pid
        if pid is None:
            raise ProbeError("give the pid of the query to terminate (see db.slow_queries)")
        row = _first(
            conn,
            "SELECT pid, usename AS user, state, application_name, backend_type,"
            " extract(epoch FROM now() - query_start)::float8 AS seconds,"
            " left(query, %s) AS query, datname AS database,"
            " pid = pg_backend_pid() AS own, datname = current_database() AS here"
            " FROM pg_stat_activity WHERE pid = %s",
            [QUERY_CHARS + 1, pid],
        )
        row = _terminable(conn, row, pid, self.target.name, "finished already?", "query")
        if row["state"] is None:
            raise ProbeError(
                f"pid {pid} belongs to another role and its activity is hidden: "
                "the target's role needs pg_monitor"
            )
        if row["state"] == "idle":
            raise ProbeError(f"pid {pid} is idle, not running a query")
        _shorten_queries([row])
        return row

    def describe(self, conn: Conn) -> str:
        row = self.running_backend(conn)
        return (
            f"terminate pid {row['pid']} on {self.target.name} (user {row['user']}, "
            f"{row['state']} for {_human(row['seconds'])}): {row['query']}"
        )

    def inspect(self, conn: Conn) -> ProbeResult:
        row = self.running_backend(conn)
        pid = row["pid"]
        done = _first(
            conn,
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
            " WHERE pid = %s AND state <> 'idle' AND backend_type = 'client backend'"
            " AND datname = current_database() AND pid <> pg_backend_pid()",
            [pid],
        )
        if not done or not done["done"]:
            raise ProbeError(f"pid {pid} finished or went idle before it could be terminated")
        still = _wait_gone(conn, [pid], min(TERMINATION_WAIT, self.time_left()))
        self.emit_table(
            ["pid", "user", "state", "for", "query", "result"],
            [
                (
                    pid,
                    row["user"],
                    row["state"],
                    _human(row["seconds"]),
                    row["query"],
                    "still exiting" if still else "terminated",
                )
            ],
        )
        data = {**row, "terminated": True, "gone": not still}
        for key in ("own", "here"):
            data.pop(key, None)
        if still:
            return ProbeResult(
                Outcome.WARNING,
                f"signalled pid {pid} on {self.target.name}; it was still exiting after "
                f"{TERMINATION_WAIT:g} s",
                data=data,
            )
        return ProbeResult(
            Outcome.OK,
            f"terminated pid {pid} on {self.target.name} ({row['state']} for "
            f"{_human(row['seconds'])})",
            data=data,
        )


@dataclass
class TerminateIdleInTransactionParams:
    # Seconds idle inside an open transaction (as db.idle_in_transaction counts them).
    min_seconds: float = 300
    # The pids the reviewed plan named (set by the review): only those, if still idle.
    pids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.min_seconds < 0:
            raise ProbeError("parameter min_seconds must be 0 or more")


@register
class TerminateIdleInTransaction(PostgresAction):
    """db.terminate_idle_in_transaction: terminate the sessions of the target's
    database that have sat idle in an open transaction for over `min_seconds`
    (their transactions roll back, their locks go). Each is checked again when it is
    terminated: one that went back to work since the plan is left alone."""

    name = "postgres.terminate_idle_in_transaction"
    Params = TerminateIdleInTransactionParams

    @property
    def _limit(self) -> str:
        return seconds_words(self.params.min_seconds)

    def describe(self, conn: Conn) -> str:
        rows = _named(_idle_in_transaction(conn, self.params.min_seconds), self.params.pids)
        self.bound = {"pids": [r["pid"] for r in rows]}
        if not rows:
            return (
                f"terminate nothing: no session of {conn.info.dbname} on {self.target.name} "
                f"is idle in transaction for longer than {self._limit}"
            )
        blocking = sorted({pid for r in rows for pid in r["blocking"]})
        held_up = f", holding up pids {_pid_list(blocking)}" if blocking else ""
        return (
            f"terminate {_plural(len(rows), 'session')} idle in transaction for longer than "
            f"{self._limit} on {self.target.name} (database {conn.info.dbname}{held_up}), "
            f"rolling back their transactions: pids {_pid_list(r['pid'] for r in rows)}"
        )

    def inspect(self, conn: Conn) -> ProbeResult:
        found = _idle_in_transaction(conn, self.params.min_seconds)
        rows = _named(found, self.params.pids)
        terminated, skipped, refused = _terminate_each(
            conn, [r["pid"] for r in rows], IDLE_IN_TRANSACTION_WHERE, [self.params.min_seconds]
        )
        skipped += _not_found(found, self.params.pids)
        still = _wait_gone(conn, terminated, min(TERMINATION_WAIT, self.time_left()))
        by_pid = {r["pid"]: r for r in rows}
        if terminated:
            self.emit_table(
                ["pid", "user", "application", "idle for", "result"],
                [
                    (
                        p,
                        by_pid[p]["user"],
                        by_pid[p]["application_name"],
                        _human(by_pid[p]["idle_seconds"]),
                        "still exiting" if p in still else "terminated",
                    )
                    for p in terminated
                ],
                text=[f"last statement: {by_pid[p]['query']}" for p in terminated],
            )
        for item in refused:
            self.emit(f"pid {item['pid']} not terminated: {item['error']}")
        if skipped:
            self.emit(f"no longer idle in transaction, left alone: pids {_pid_list(skipped)}")
        data = {
            "database": conn.info.dbname,
            "min_seconds": self.params.min_seconds,
            "terminated": terminated,
            "skipped": skipped,
            "refused": refused,
            "still_present": still,
        }
        if not terminated and not refused:
            return ProbeResult(
                Outcome.OK,
                f"no session idle in transaction for longer than {self._limit} on "
                f"{self.target.name}",
                data=data,
            )
        summary = (
            f"terminated {_plural(len(terminated), 'session')} idle in transaction on "
            f"{self.target.name}" + (f": pids {_pid_list(terminated)}" if terminated else "")
        )
        if refused or still:
            summary += f"; {len(refused)} refused, {len(still)} still present"
            return ProbeResult(Outcome.WARNING, summary, data=data)
        return ProbeResult(Outcome.OK, summary, data=data)


@dataclass
class TerminateBlockerParams:
    pid: int | None = None

    def __post_init__(self) -> None:
        if self.pid is not None and self.pid <= 0:
            raise ProbeError("parameter pid must be a positive process id")


BLOCKER_WHERE = """
    datname = current_database() AND backend_type = 'client backend'
    AND pid <> pg_backend_pid() AND cardinality(pg_blocking_pids(pid)) = 0
    AND EXISTS (SELECT 1 FROM pg_stat_activity w WHERE a.pid = ANY(pg_blocking_pids(w.pid)))
"""


@register
class TerminateBlocker(PostgresAction):
    """db.terminate_blocker: terminate the session at the root of a lock chain (it
    blocks others and waits on nobody), as db.locks found it; its transaction rolls
    back and the sessions it held up go on. Refused when the pid no longer blocks
    anyone, waits itself, or is not a client session of the target's database."""

    name = "postgres.terminate_blocker"
    Params = TerminateBlockerParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        """The pid is picked from the root blockers of the latest db.locks result."""
        found = evidence.get("lock_contention", {})
        roots = found.get("details", {}).get("root_blockers", [])
        options = tuple(
            (
                int(r["pid"]),
                f"pid {r['pid']} ({r.get('state') or '?'}, holds up "
                f"{_pid_list(r.get('blocks', []))}): {str(r.get('query') or '')[:80]}",
            )
            for r in roots
            if int(r.get("pid") or 0) > 0
        )
        return [
            ParamChoice(
                "pid",
                "Root blocker",
                help="From the latest db.locks result",
                options=options,
            )
        ]

    def blocker(self, conn: Conn) -> dict[str, Any]:
        """The root blocker to terminate, or ProbeError saying why it may not be."""
        pid = self.params.pid
        if pid is None:
            raise ProbeError("give the pid of the root blocker (see db.locks)")
        row = _first(
            conn,
            "SELECT pid, usename AS user, state, backend_type, datname AS database,"
            " extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,"
            " left(query, %s) AS query, pid = pg_backend_pid() AS own,"
            " datname = current_database() AS here,"
            " pg_blocking_pids(pid) AS waits_on"
            " FROM pg_stat_activity a WHERE pid = %s",
            [QUERY_CHARS + 1, pid],
        )
        where = self.target.name
        row = _terminable(conn, row, pid, where, "gone already?", "session")
        if row["waits_on"]:
            raise ProbeError(
                f"pid {pid} is not the root of its chain: it waits on pids "
                f"{_pid_list(row['waits_on'])} (run db.locks again)"
            )
        waits = _all(
            conn,
            "SELECT pid, pg_blocking_pids(pid) AS blocked_by FROM pg_stat_activity"
            " WHERE cardinality(pg_blocking_pids(pid)) > 0",
        )
        held_up = lock_chains({w["pid"]: list(w["blocked_by"]) for w in waits}).get(pid)
        if not held_up:
            raise ProbeError(f"pid {pid} no longer blocks anyone on {where}: nothing to do")
        row["blocking"] = held_up
        _shorten_queries([row])
        return row

    def describe(self, conn: Conn) -> str:
        row = self.blocker(conn)
        return (
            f"terminate pid {row['pid']} on {self.target.name} (user {row['user']}, "
            f"{_session_state(row)}), the root blocker holding up pids "
            f"{_pid_list(row['blocking'])}, rolling back its transaction: {row['query']}"
        )

    def inspect(self, conn: Conn) -> ProbeResult:
        row = self.blocker(conn)
        pid = row["pid"]
        terminated, _, refused = _terminate_each(conn, [pid], BLOCKER_WHERE, [])
        if refused:
            raise ProbeError(f"pid {pid} not terminated: {refused[0]['error']}")
        if not terminated:
            raise ProbeError(f"pid {pid} stopped blocking or went away before it was terminated")
        still = _wait_gone(conn, [pid], min(TERMINATION_WAIT, self.time_left()))
        self.emit_table(
            ["pid", "user", "state", "held up", "result"],
            [
                (
                    pid,
                    row["user"],
                    _session_state(row),
                    row["blocking"],
                    "still exiting" if still else "terminated",
                )
            ],
            text=[row["query"]],
        )
        data = {**row, "terminated": True, "gone": not still}
        for key in ("own", "here"):
            data.pop(key, None)
        if still:
            return ProbeResult(
                Outcome.WARNING,
                f"signalled pid {pid} on {self.target.name}; it was still exiting after "
                f"{TERMINATION_WAIT:g} s",
                data=data,
            )
        return ProbeResult(
            Outcome.OK,
            f"terminated pid {pid} on {self.target.name}, the root blocker holding up pids "
            f"{_pid_list(row['blocking'])}",
            data=data,
        )


def _named(rows: list[dict[str, Any]], pids: list[int] | None) -> list[dict[str, Any]]:
    """The rows a reviewed plan named (all of them when run without one)."""
    if pids is None:
        return rows
    wanted = set(pids)
    return [r for r in rows if r["pid"] in wanted]


def _not_found(rows: list[dict[str, Any]], pids: list[int] | None) -> list[int]:
    """The pids a reviewed plan named that no longer match."""
    present = {r["pid"] for r in rows}
    return sorted(p for p in pids or [] if p not in present)


def _terminate_each(
    conn: Conn, pids: list[int], where: str, params: list[Any]
) -> tuple[list[int], list[int], list[dict[str, Any]]]:
    """pg_terminate_backend of each pid that still matches `where` (a condition on
    pg_stat_activity `a`, checked at the moment of terminating): (terminated, no
    longer matching, refused)."""
    terminated: list[int] = []
    skipped: list[int] = []
    refused: list[dict[str, Any]] = []
    for pid in pids:
        query = (
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity a"  # noqa: S608
            f" WHERE {where} AND pid = %s"
        )
        args = [*params, pid]
        try:
            done = conn.execute(query, args).fetchone()
        except errors.InsufficientPrivilege as exc:
            refused.append({"pid": pid, "error": _one_line(str(exc))})
            continue
        if done and done["done"]:
            terminated.append(pid)
        else:
            skipped.append(pid)
    return terminated, skipped, refused


@dataclass
class VacuumParams:
    # One table ("plays" or "schema.plays"); none: the whole database.
    table: str | None = None

    def __post_init__(self) -> None:
        if self.table is not None and (
            not self.table.strip() or len(self.table) > 200 or "\x00" in self.table
        ):
            raise ProbeError("parameter table must be a table name (or left out)")


@register
class Vacuum(PostgresAction):
    """db.vacuum: VACUUM ANALYZE of the target's database, or of one existing table
    (looked up in the catalog, then quoted as an identifier)."""

    name = "postgres.vacuum"
    Params = VacuumParams

    def _table(self, conn: Conn) -> dict[str, Any] | None:
        table = self.params.table
        if table is None:
            return None
        row = _first(
            conn,
            "SELECT n.nspname AS schema, c.relname AS name,"
            " pg_size_pretty(pg_total_relation_size(c.oid)) AS size,"
            " s.n_dead_tup AS dead_rows"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid"
            " WHERE c.relkind IN ('r', 'm', 'p', 't') AND ("
            "  (c.relname = %(t)s AND pg_table_is_visible(c.oid))"
            "  OR n.nspname || '.' || c.relname = %(t)s)"
            " ORDER BY pg_table_is_visible(c.oid) DESC LIMIT 1",
            {"t": table},
        )
        if row is None:
            raise ProbeError(f"no table {table!r} in database {conn.info.dbname}")
        row["identifier"] = sql.Identifier(row["schema"], row["name"]).as_string(conn)
        return row

    def describe(self, conn: Conn) -> str:
        table = self._table(conn)
        if table is not None:
            dead = "" if table["dead_rows"] is None else f", about {table['dead_rows']} dead rows"
            return (
                f"VACUUM ANALYZE table {table['identifier']} on {self.target.name} "
                f"(database {conn.info.dbname}, {table['size']}{dead})"
            )
        info = _one(
            conn,
            "SELECT count(*)::int AS tables,"
            " pg_size_pretty(pg_database_size(current_database())) AS size"
            " FROM pg_stat_user_tables",
        )
        return (
            f"VACUUM ANALYZE the whole database {conn.info.dbname} on {self.target.name} "
            f"({_plural(info['tables'], 'table')}, {info['size']})"
        )

    def inspect(self, conn: Conn) -> ProbeResult:
        table = self._table(conn)
        notices: list[str] = []
        conn.add_notice_handler(
            lambda d: notices.append(f"{d.severity}: {_one_line(d.message_primary or '')}")
        )
        if table is None:
            what, statement = f"database {conn.info.dbname}", sql.SQL("VACUUM (ANALYZE)")
        else:
            what = f"table {table['identifier']}"
            statement = sql.SQL("VACUUM (ANALYZE) {}").format(
                sql.Identifier(table["schema"], table["name"])
            )
        self.emit(f"{statement.as_string(conn)} on {self.target.name}")
        started = time.monotonic()
        conn.execute(statement)  # autocommit: VACUUM cannot run in a transaction
        seconds = time.monotonic() - started
        for line in notices[:20]:
            self.emit(line)
        if len(notices) > 20:
            self.emit(f"… and {len(notices) - 20} more notices")
        self.emit(f"done in {_human(seconds)}")
        skipped = sum("skipping" in n for n in notices)
        summary = f"VACUUM ANALYZE of {what} on {self.target.name} done in {_human(seconds)}"
        if skipped:
            summary += f" ({_plural(skipped, 'table')} skipped: not the owner)"
        return ProbeResult(
            Outcome.OK,
            summary,
            data={
                "database": conn.info.dbname,
                "table": table["identifier"] if table else None,
                "seconds": round(seconds, 3),
                "notices": notices,
            },
        )


# --- helpers ------------------------------------------------------------------------


def _all(conn: Conn, query: str, params: Any = None) -> list[dict[str, Any]]:
    return [_jsonable(row) for row in conn.execute(query, params).fetchall()]


def _first(conn: Conn, query: str, params: Any = None) -> dict[str, Any] | None:
    rows = _all(conn, query, params)
    return rows[0] if rows else None


def _one(conn: Conn, query: str, params: Any = None) -> dict[str, Any]:
    row = _first(conn, query, params)
    if row is None:
        raise ProbeError("the server returned no row where one was expected")
    return row


def _wait_gone(conn: Conn, pids: list[int], seconds: float) -> list[int]:
    """The pids still in pg_stat_activity after waiting up to `seconds` for them to go."""
    deadline = time.monotonic() + seconds
    while pids:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid", [pids]
        ).fetchall()
        pids = [r["pid"] for r in rows]
        if not pids or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return pids


def _number(value: Any) -> int | float:
    if value is None:
        raise ProbeError("the count query returned NULL: wrap it in coalesce(…, 0)")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProbeError(f"the count query must return a number, not {type(value).__name__}")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _terminable(
    conn: Conn, row: dict[str, Any] | None, pid: int, where: str, gone: str, what: str
) -> dict[str, Any]:
    """The pg_stat_activity row of a backend an action may terminate (ProbeError when
    it is gone, is this check's own session, not a client backend, or in another
    database)."""
    if row is None:
        raise ProbeError(f"pid {pid} is not a backend on {where} ({gone})")
    if row["own"]:
        raise ProbeError(f"pid {pid} is this check's own session: refusing to terminate it")
    if row["backend_type"] != "client backend":
        raise ProbeError(f"pid {pid} is a {row['backend_type']}, not a client {what}")
    if not row["here"]:
        raise ProbeError(
            f"pid {pid} is connected to database {row['database']}, "
            f"not {conn.info.dbname}: refusing"
        )
    return row


def _shorten_queries(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        query = row.get("query")
        if isinstance(query, str) and len(query) > QUERY_CHARS:
            row["query"] = query[:QUERY_CHARS] + "…"


def _jsonable(value: Any) -> Any:
    """Rows and results as JSON: times as ISO text, intervals as seconds, addresses
    as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, IPv4Address | IPv6Address | IPv4Network | IPv6Network):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, TEXT_WIDTH, break_long_words=True, break_on_hyphens=False) or [""]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    return _one_line(str(value))


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:  # a short query's time matters to the tenth
        return f"{seconds:.1f}s"
    return format_duration(seconds)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _wait(row: dict[str, Any]) -> str:
    if not row.get("wait_event"):
        return "-"
    return f"{row['wait_event_type']}: {row['wait_event']}"


def _session_state(row: dict[str, Any]) -> str:
    """ "idle in transaction, in transaction for 2m 05s" (what a blocker is doing)."""
    state = row.get("state") or "activity hidden: the target's role needs pg_monitor"
    if row.get("transaction_seconds") is not None:
        return f"{state}, in transaction for {_human(row['transaction_seconds'])}"
    return state


def _lock(row: dict[str, Any]) -> str:
    target = row["relation"] or row["locktype"]
    return f"{row['mode']} on {target}"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _pid_list(pids: Iterable[int], most: int = 20) -> str:
    items = list(pids)
    text = ", ".join(map(str, items[:most]))
    return text + (f" and {len(items) - most} more" if len(items) > most else "")


# --- the database snapshot (appended: sec.db_snapshot) ---------------------------------

# Seconds pg_dump waits for a table's lock before failing with a clear message (a
# table held by a migration, say); the step's timeout stays the hard limit.
PG_DUMP_LOCK_WAIT = 30.0
PG_DUMP_STDERR_LINES = 20  # last lines of pg_dump's messages kept for an error


@register
class Snapshot(PostgresAction):
    """sec.db_snapshot: `pg_dump` of the target's database in the custom format
    (restorable with `pg_restore`) into a temporary file, returned as a ProbeFile
    for the engine to store on the incident as evidence with its SHA-256.

    pg_dump gets the target's URL without its password; the password reaches it
    only through PGPASSWORD in the child process's own environment (never its
    arguments, never this process's environment). It runs under the step's timeout
    (killed past it) and a lock wait limit, and must be at least the server's
    major version (Debian's postgresql-client-<major>)."""

    name = "postgres.snapshot"

    def describe(self, conn: Conn) -> str:
        info = _one(conn, "SELECT pg_size_pretty(pg_database_size(current_database())) AS size")
        return (
            f"pg_dump the database {conn.info.dbname} ({info['size']}) on {self.target.name} "
            f"({conn.info.host}:{conn.info.port}) (custom format) and store it on the incident"
        )

    def run(self) -> ProbeResult:
        with self._scrubbed_errors():
            with self.session(read_only=True) as conn:
                database, host, port = conn.info.dbname, conn.info.host, conn.info.port
                server_major = conn.info.server_version // 10000
            binary, dump_major = pg_dump_binary(server_major)
            self.emit(
                f"pg_dump {dump_major} of database {database} on {self.target.name} "
                f"({host}:{port}), PostgreSQL {server_major}, custom format"
            )
            fd, path = tempfile.mkstemp(prefix="lotoops-snapshot-", suffix=".dump")
            os.close(fd)
            try:
                seconds = self._dump(binary, path, database)
                size = os.path.getsize(path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(path)
                raise
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.emit(f"done in {_human(seconds)}: {_bytes(size)}")
        return ProbeResult(
            Outcome.OK,
            f"pg_dump of {database} on {self.target.name}: {_bytes(size)} in "
            f"{_human(seconds)} (custom format)",
            data={
                "database": database,
                "host": host,
                "port": port,
                "server_major": server_major,
                "pg_dump_major": dump_major,
                "format": "custom",
                "bytes": size,
                "seconds": round(seconds, 3),
            },
            files=[
                ProbeFile(
                    name=f"{self.target.name}-{database}-{stamp}.dump",
                    path=path,
                    content_type="application/octet-stream",
                )
            ],
        )

    def conninfo(self) -> str:
        """The target's connection string without any password."""
        try:
            params = psycopg.conninfo.conninfo_to_dict(self.target.url)
        except psycopg.ProgrammingError as exc:
            raise ProbeError(f"{self.target.name}: malformed URL: {_one_line(str(exc))}") from None
        params.pop("password", None)
        params["application_name"] = APPLICATION_NAME
        params["connect_timeout"] = self.connect_timeout
        return psycopg.conninfo.make_conninfo(**params)

    def child_env(self) -> dict[str, str]:
        """This process's environment (as a psycopg session sees it), with the
        target's password as PGPASSWORD (never one meant for something else) and
        untranslated messages."""
        env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
        secret = self.target.secret()
        if secret:
            env["PGPASSWORD"] = secret
        env["LC_MESSAGES"] = "C"
        return env

    def _dump(self, binary: str, path: str, database: str) -> float:
        """Run pg_dump into `path`, streaming its messages; seconds it took."""
        left = self.time_left()
        command = [
            binary,
            "--format=custom",
            "--no-password",
            "--verbose",
            f"--lock-wait-timeout={int(PG_DUMP_LOCK_WAIT * 1000)}",
            f"--file={path}",
            f"--dbname={self.conninfo()}",
        ]
        started = time.monotonic()
        messages: list[str] = []
        child = subprocess.Popen(  # noqa: S603  (fixed binary, no shell)
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.child_env(),
            text=True,
            errors="replace",
        )
        # A thread reads pg_dump's messages; this thread emits them (emitting may
        # write to our database, which belongs to this thread) and keeps the time.
        received: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        reader = threading.Thread(target=_read_lines, args=(child, received), daemon=True)
        reader.start()
        deadline = started + max(0.1, left)
        try:
            while (code := child.poll()) is None:
                self._emit_received(received, messages)
                if time.monotonic() >= deadline:
                    raise ProbeTimeout(
                        f"{self.target.name}: pg_dump of {database} did not finish within "
                        f"{_seconds(self.timeout)} (stopped)"
                    )
                with suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
        finally:  # a timeout, or the task's own time limit: never leave pg_dump behind
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)
            reader.join(timeout=5)
            self._emit_received(received, messages)
        seconds = time.monotonic() - started
        if code != 0:
            locked = next((m for m in messages if "Query was: LOCK TABLE" in m), "")
            if locked:
                table = locked.split("LOCK TABLE", 1)[1].split(" IN ")[0].strip()
                raise ProbeError(
                    self.scrub(
                        f"{self.target.name}: pg_dump of {database} could not lock table "
                        f"{table} within {PG_DUMP_LOCK_WAIT:g} s: another session holds it "
                        "(a migration, a VACUUM FULL?); try again when it is done"
                    )
                )
            detail = " / ".join(messages[-3:]) or f"exit status {code}"
            raise ProbeError(
                self.scrub(f"{self.target.name}: pg_dump of {database} failed: {detail}")
            )
        return seconds

    def _emit_received(self, received: queue.SimpleQueue[str | None], kept: list[str]) -> None:
        while not received.empty():
            line = received.get_nowait()
            if not line:
                continue
            kept.append(self.scrub(line))
            del kept[:-PG_DUMP_STDERR_LINES]
            self.emit(line)


def _read_lines(child: subprocess.Popen[str], received: queue.SimpleQueue[str | None]) -> None:
    assert child.stderr is not None
    for raw in child.stderr:
        received.put(_one_line(raw))
    child.stderr.close()


def pg_dump_binary(server_major: int) -> tuple[str, int]:
    """The pg_dump to use for a server of `server_major` and its major version:
    Debian's versioned binary for that major when installed, else the one on PATH;
    refused when older than the server (it cannot dump a newer server)."""
    candidates = [f"/usr/lib/postgresql/{server_major}/bin/pg_dump", shutil.which("pg_dump")]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if binary is None:
        raise ProbeError(
            f"pg_dump is not installed where the workers run: install "
            f"postgresql-client-{server_major}"
        )
    try:
        out = subprocess.run(  # noqa: S603  (fixed binary, no shell)
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProbeError(f"{binary} --version failed: {exc}") from None
    found = re.search(r"\b(\d+)(?:\.\d+)?", out)
    if found is None:
        raise ProbeError(f"cannot read the version of {binary}: {_one_line(out)!r}")
    major = int(found.group(1))
    if major < server_major:
        raise ProbeError(
            f"pg_dump {major} cannot dump a PostgreSQL {server_major} server: install "
            f"postgresql-client-{server_major} where the workers run"
        )
    return binary, major
