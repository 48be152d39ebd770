"""Report exports at scale: the period report over 10,000 incidents (CSV and PDF) and
one incident's PDF with a 2,000-event timeline.

    .venv/bin/python bench/bench_reports.py [--incidents 10000] [--events 2000] [--repeats 3]

Seeds a fresh PostgreSQL database (lotoops_bench_reports on 127.0.0.1) with
`seed_demo`, then times each export through the same code the views run (the
queries through incidents.access as a superuser, the rendering, the bytes), the
best of `--repeats`, with the peak Python memory of one run (tracemalloc) and the
process's peak resident set size (ru_maxrss) at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
DB = "lotoops_bench_reports"


def ensure_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def measure(fn: Callable[[], bytes | str], repeats: int) -> tuple[float, float, int]:
    """(best seconds, peak traced MiB of the first run, output bytes)."""
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, peak, len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ensure_database(DB)
    os.environ["DATABASE_URL"] = f"{PG}/{DB}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import RequestFactory
    from django.utils import timezone

    from incidents.models import Incident
    from incidents.postincident import postmortem
    from incidents.reporting import exports
    from incidents.views import reports as report_views

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    call_command(
        "seed_demo",
        incidents=args.incidents,
        big_timeline=args.events,
        seed=7,
        verbosity=0,
    )
    seeded = time.perf_counter() - started
    admin = get_user_model().objects.create_superuser("bench", "bench@lotolink.test", None)

    today = timezone.localdate()
    query = {"start": f"{today.replace(year=today.year - 1):%Y-%m-%d}", "end": f"{today:%Y-%m-%d}"}
    factory = RequestFactory()

    def period_request() -> object:
        request = factory.get("/reports/", query)
        request.user = admin
        request.htmx = False
        return request

    def period_csv() -> bytes:
        return report_views.reports_csv(period_request()).content

    def period_pdf() -> bytes:
        return report_views.reports_pdf(period_request()).content

    _, report = report_views._period(period_request())
    rows = len(report.rows)

    big = Incident.objects.order_by("-pk").first()
    draft = postmortem.draft_for(big)
    draft.timeline_event_ids = list(big.timeline.values_list("pk", flat=True))
    draft.save()
    chosen = len(draft.timeline_event_ids)

    def incident_pdf() -> bytes:
        return exports.incident_pdf(exports.incident_report(big))

    def incident_md() -> str:
        return exports.incident_markdown(exports.incident_report(big))

    results = [
        (f"period CSV ({rows} incidents)", *measure(period_csv, args.repeats)),
        (f"period PDF ({rows} incidents)", *measure(period_pdf, args.repeats)),
        (f"incident PDF ({chosen} timeline events)", *measure(incident_pdf, args.repeats)),
        (f"incident Markdown ({chosen} timeline events)", *measure(incident_md, args.repeats)),
    ]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seed_demo {args.incidents} incidents + {args.events}-event timeline: {seeded:.1f} s")
    print(f"{'export':44} {'best s':>8} {'peak MiB':>9} {'size KiB':>9}")
    for name, seconds, peak, size in results:
        print(f"{name:44} {seconds:8.2f} {peak:9.1f} {size / 1024:9.0f}")
    print(f"process peak RSS: {rss:.0f} MiB (repeats: {args.repeats}, best of)")


if __name__ == "__main__":
    main()
