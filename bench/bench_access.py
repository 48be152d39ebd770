"""The dashboard's cost of the restricted-incident rule, in one run.

    .venv/bin/python bench/bench_access.py [--incidents 10000] [--granted 1000]
        [--requests 200] [--database-url postgres://postgres@127.0.0.1:5432/lotoops_bench_access]

Creates a throwaway PostgreSQL database (dropped and recreated; its name must start
with "lotoops_bench"), migrates, seeds `--incidents` incidents (a fifth of them
restricted, most open) and a user granted `view_incident` on `--granted` of them
(half of those restricted) by guardian object permissions. Then times the dashboard
(`GET /`, the whole Django stack in process, no network) alternately for that user
and for a superuser, and prints p50/p95 of each and the ratio (goal: user p95 at
most 1.2x the admin's). Drops the database at the end. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.2


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def recreate(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("lotoops_bench"):
        raise SystemExit(f"refusing to drop {name!r}: the name must start with lotoops_bench")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(incidents: int, granted: int) -> tuple[object, object]:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from guardian.models import UserObjectPermission

    from incidents.models import Category, Incident, Severity, Status
    from incidents.seed import seed_runbook

    call_command("migrate", verbosity=0, interactive=False)
    seed_runbook()
    users = get_user_model().objects
    admin = users.create_superuser("bench-admin", "", "x" * 20)
    user = users.create_user("bench-user", "", "x" * 20)
    severities = list(Severity.objects.all())
    now = timezone.now()
    rows = []
    for i in range(incidents):
        declared = now - timedelta(minutes=i)
        rows.append(
            Incident(
                title=f"Incident {i}",
                category=Category.SECURITY if i % 5 == 0 else Category.DATABASE,
                severity=severities[i % len(severities)],
                status=Status.RESOLVED if i % 10 == 9 else Status.INVESTIGATING,
                restricted=i % 5 == 0,
                channel_name=f"#incident-{i}",
                declared_at=declared,
                response_deadline=declared + timedelta(minutes=30),
                resolved_at=declared + timedelta(hours=1) if i % 10 == 9 else None,
            )
        )
    Incident.objects.bulk_create(rows, batch_size=2000)
    perm = ContentType.objects.get_for_model(Incident).permission_set.get(codename="view_incident")
    restricted = list(Incident.objects.filter(restricted=True).values_list("pk", flat=True))
    ordinary = list(Incident.objects.filter(restricted=False).values_list("pk", flat=True))
    chosen = restricted[: granted // 2] + ordinary[: granted - granted // 2]
    content_type = ContentType.objects.get_for_model(Incident)
    UserObjectPermission.objects.bulk_create(
        UserObjectPermission(user=user, permission=perm, content_type=content_type, object_pk=pk)
        for pk in chosen
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # plans as on a database that has lived a while
    return user, admin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--granted", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/lotoops_bench_access"
    )
    args = parser.parse_args()
    recreate(args.database_url)
    os.environ.update(
        DATABASE_URL=args.database_url,
        DJANGO_SETTINGS_MODULE="lotoops.settings",
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.test import Client

    try:
        user, admin = seed(args.incidents, args.granted)
        clients = {}
        for name, who in (("user", user), ("admin", admin)):
            clients[name] = Client()
            clients[name].force_login(who)
            for _ in range(5):  # warm up: templates, connections, caches
                assert clients[name].get("/").status_code == 200
        times: dict[str, list[float]] = {"user": [], "admin": []}
        for _ in range(args.requests):
            for name, client in clients.items():  # alternate: same machine load for both
                started = time.perf_counter()
                response = client.get("/")
                times[name].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
        print(
            f"{args.incidents} incidents, user granted {args.granted} "
            f"({args.granted // 2} restricted), {args.requests} requests each"
        )
        for name, series in times.items():
            print(f"  {name:5}: p50 {pct(series, 0.5):7.1f} ms   p95 {pct(series, 0.95):7.1f} ms")
        ratio = pct(times["user"], 0.95) / pct(times["admin"], 0.95)
        print(f"  user p95 / admin p95 = {ratio:.2f} (goal <= {GOAL})")
        return 0 if ratio <= GOAL else 1
    finally:
        from django.db import connections

        connections.close_all()
        drop(args.database_url)


if __name__ == "__main__":
    raise SystemExit(main())
