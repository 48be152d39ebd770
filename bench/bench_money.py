"""The money-at-risk probe against a big plays table: how long one reading takes
(the beat runs it every MONEY_AT_RISK_INTERVAL s per open payment or banca incident).

    .venv/bin/python bench/bench_money.py [--plays 1000000] [--pending 0.02] [--repeats 5]

Creates lotoops_bench_money on 127.0.0.1 (dropped first) with a `plays` table of
`--plays` rows, a fraction `--pending` of them pending with ages spread over 6 h,
in 4 currencies, 40 bancas and 4 Stripe states, with and without an index on
(status, created_at); runs `postgres.money_at_risk` with the seeded step's params
and prints the best and median of `--repeats` runs, and the plays and money found.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
DB = "lotoops_bench_money"


def build(plays: int, pending: float) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    with psycopg.connect(f"{PG}/{DB}", autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE plays (id bigserial PRIMARY KEY, status text NOT NULL,"
            " created_at timestamptz NOT NULL, amount bigint NOT NULL, currency text NOT NULL,"
            " banca text, stripe_status text, user_id int NOT NULL)"
        )
        conn.execute(
            "INSERT INTO plays (status, created_at, amount, currency, banca, stripe_status,"
            " user_id) SELECT CASE WHEN random() < %s THEN 'pending' ELSE 'paid' END,"
            " now() - random() * interval '6 hours', (random() * 100000)::bigint,"
            " (ARRAY['USD','DOP','EUR','JPY'])[1 + (g %% 4)], 'banca-' || (g %% 40),"
            " (ARRAY['processing','requires_action','requires_payment_method',"
            "'succeeded'])[1 + (g %% 4)], g %% 50000 FROM generate_series(1, %s) g",
            [pending, plays],
        )
        conn.execute("ANALYZE plays")


def run(repeats: int) -> tuple[list[float], dict]:
    from diagnostics.probes.postgres import MoneyAtRisk

    class Target:
        name, kind, url, options = "bench", "postgres", f"{PG}/{DB}", {}

        def secret(self) -> str:
            return ""

        def url_with_secret(self) -> str:
            return self.url

    params = {"window_minutes": 60, "short_window_minutes": 15}
    times, data = [], {}
    for _ in range(repeats):
        probe = MoneyAtRisk.build(Target(), params, timeout=30)
        started = time.perf_counter()
        data = probe.run().data
        times.append(time.perf_counter() - started)
    return times, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plays", type=int, default=1_000_000)
    parser.add_argument("--pending", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    # The bench's PostgreSQL is on loopback, which targets may not reach by default.
    os.environ.setdefault("TARGET_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    import django

    django.setup()
    build(args.plays, args.pending)
    print(f"{'plays':>10} {'index':>18} {'best ms':>8} {'median ms':>9} {'pending>15m':>11}")
    for index in ("none", "(status,created_at)"):
        if index != "none":
            import psycopg

            with psycopg.connect(f"{PG}/{DB}", autocommit=True) as conn:
                conn.execute("CREATE INDEX ON plays (status, created_at)")
                conn.execute("ANALYZE plays")
        times, data = run(args.repeats)
        print(
            f"{args.plays:>10,} {index:>18} {min(times) * 1000:>8.1f} "
            f"{statistics.median(times) * 1000:>9.1f} {data['plays']['short']:>11,}"
        )


if __name__ == "__main__":
    main()
