"""A Lotolink platform database on the machine's PostgreSQL with plays in known
states and amounts: several currencies, bancas and Stripe states, pending ages on
both sides of the windows (15 min and the runbook's hour). Its own database
(`<LOTOOPS_PROBE_PG_DB>_platform`), so the probe tests' scratch `plays` stays theirs."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import pytest

from tests.diagnostics.pg_helpers import DB, HOST, PORT, query, reachable

PLATFORM_DB = f"{DB}_platform"
PLATFORM_URL = f"postgres://postgres@{HOST}:{PORT}/{PLATFORM_DB}"

# (minutes pending, status, amount in minor units, currency, banca, stripe state, user)
PLAYS: list[tuple[int, str, int, str, str | None, str | None, int]] = [
    # pending over the hour
    (120, "pending", 1000, "USD", "banca-norte", "processing", 1),
    (90, "pending", 2550, "usd", "banca-norte", "requires_action", 2),
    (75, "pending", 500000, "DOP", "banca-sur", "processing", 3),
    (180, "pending", 700, "JPY", "banca-sur", "processing", 1),
    (62, "pending", 1234, "EUR", None, None, 4),
    # pending between 15 min and the hour
    (30, "pending", 999, "USD", "banca-sur", "processing", 5),
    (58, "pending", 5001, "DOP", "banca-norte", "requires_payment_method", 3),
    (17, "pending", 100, "EUR", "banca-norte", "processing", 6),
    # pending, but for less than 15 min
    (13, "pending", 77777, "USD", "banca-norte", "processing", 7),
    (1, "pending", 88888, "DOP", "banca-sur", "processing", 8),
    # not pending
    (300, "paid", 99999, "USD", "banca-norte", "succeeded", 9),
    (200, "failed", 12345, "EUR", "banca-sur", "canceled", 10),
]

# What the windows hold, by hand from PLAYS (minor units).
EXPECTED_TOTALS = {
    "USD": {"long": 3550, "short": 4549, "long_count": 2, "short_count": 3},
    "DOP": {"long": 500000, "short": 505001, "long_count": 1, "short_count": 2},
    "JPY": {"long": 700, "short": 700, "long_count": 1, "short_count": 1},
    "EUR": {"long": 1234, "short": 1334, "long_count": 1, "short_count": 2},
}


def create_platform_db() -> None:
    if not query("SELECT 1 AS found FROM pg_database WHERE datname = %s", [PLATFORM_DB]):
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            query(f'CREATE DATABASE "{PLATFORM_DB}"')
    reset_plays()


def reset_plays(plays: list[tuple[Any, ...]] = PLAYS) -> None:
    with psycopg.connect(PLATFORM_URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS plays")
        conn.execute(
            "CREATE TABLE plays (id serial PRIMARY KEY, status text NOT NULL,"
            " created_at timestamptz NOT NULL, amount bigint NOT NULL, currency text NOT NULL,"
            " banca text, stripe_status text, user_id int NOT NULL)"
        )
        add_plays(plays, conn=conn)


def add_plays(plays: list[tuple[Any, ...]], conn: psycopg.Connection[Any] | None = None) -> None:
    own = conn is None
    conn = conn or psycopg.connect(PLATFORM_URL, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO plays (created_at, status, amount, currency, banca, stripe_status,"
                " user_id) VALUES (now() - %s * interval '1 minute', %s, %s, %s, %s, %s, %s)",
                plays,
            )
    finally:
        if own:
            conn.close()


def fix_plays() -> int:
    """The platform pays every pending play (what a fix of the incident does)."""
    with psycopg.connect(PLATFORM_URL, autocommit=True) as conn:
        return conn.execute("UPDATE plays SET status = 'paid' WHERE status = 'pending'").rowcount


@pytest.fixture(scope="session")
def platform_db() -> str:
    """The platform database with plays in known states (created once per session)."""
    if not reachable():
        pytest.fail("the money-at-risk tests need PostgreSQL on 127.0.0.1:5432")
    create_platform_db()
    return PLATFORM_URL


@pytest.fixture
def platform(platform_db: str, runbook: None) -> Any:
    """The seeded runbook and a PostgreSQL target pointing at the platform database
    (its plays reset to PLAYS)."""
    from diagnostics.models import Target
    from diagnostics.seed import seed_runbooks

    reset_plays()
    seed_runbooks()
    return Target.objects.create(name="lotolink-db", kind="postgres", url=platform_db)
