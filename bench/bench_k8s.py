"""'Run all' of the backend-outage procedure (`api`) with its Kubernetes checks.

    .venv/bin/python bench/bench_k8s.py [--repeats 5] [--latency 0.05]

A real Celery worker (prefork, 4 processes) on Redis, PostgreSQL as our database,
and the checks pointed at: the emulated Kubernetes API server of the tests
(tests/diagnostics/k8s_server.py, on 127.0.0.1, answering each request after
`--latency` seconds, like a busy API server far away) holding a backend outage
(three pods, one OOMKilled, one crash-looping; two revisions; pod metrics), this
machine's PostgreSQL (a scratch database) and Redis.

Prints, median of the repeats: each diagnostic's own time (started -> finished)
and the procedure's wall time from the click to the last result, against the
slowest step and the sum of the steps.

Everything runs on 127.0.0.1 and cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_engine import PG, ensure_database, start_worker, wait  # noqa: E402

REDIS = "redis://127.0.0.1:6379/13"
QUEUE = f"lotoops-bench-k8s-{uuid.uuid4().hex[:6]}"
TOKEN = "bench-k8s-token-8c7b6a5d4e3f"


def outage_cluster(latency: float):  # noqa: ANN201
    from tests.diagnostics import k8s_server as k8s

    server = k8s.KubeServer(token=TOKEN).start()
    server.latency = latency
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-a", statuses=[k8s.oom_killed_status(4)]))
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-b", statuses=[k8s.crash_loop_status(7)]))
    server.add(k8s.pod("lotolink-backend-7d9f8c6b5-c"))
    server.add(k8s.deployment(replicas=3))
    image = "registry.lotolink.com/lotolink-backend"
    server.add(k8s.replica_set(6, f"{image}:1.7.3", created=k8s.ago(days=2)))
    server.add(k8s.replica_set(7, f"{image}:1.8.0", created=k8s.ago(minutes=5), replicas=3))
    for name, memory in (("a", "480Mi"), ("b", "20Mi"), ("c", "210Mi")):
        server.add(k8s.pod_metrics(f"lotolink-backend-7d9f8c6b5-{name}", memory))
        server.add_logs(
            f"lotolink-backend-7d9f8c6b5-{name}",
            "backend",
            [f"GET /api/plays/{n} 200 12ms" for n in range(300)],
        )
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    ensure_database("lotoops_bench_k8s", fresh=True)
    ensure_database("lotoops_bench_platform", fresh=False)
    var_dir = tempfile.mkdtemp(prefix="lotoops-bench-k8s-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/lotoops_bench_k8s",
        "REDIS_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
        # The bench's peers listen on loopback, which targets may not point at by default.
        "TARGET_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "LOTOOPS_VAR_DIR": var_dir,
        "LOTOOPS_TARGET_BENCH_K8S_TOKEN": TOKEN,
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "lotoops.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from diagnostics import services
    from diagnostics.models import CheckRun, Runbook, Target
    from incidents.models import Severity
    from incidents.services import declare_incident
    from lotoops.celery import app

    app.conf.task_default_queue = QUEUE
    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE  # the queues by class are named after it
    call_command("migrate", verbosity=0)
    call_command("seed_runbook", verbosity=0)

    cluster = outage_cluster(args.latency)
    Target.objects.create(
        name="lotolink-k8s",
        kind="kubernetes",
        url=cluster.url,
        secret_env="LOTOOPS_TARGET_BENCH_K8S_TOKEN",
    )
    Target.objects.create(name="lotolink-db", kind="postgres", url=f"{PG}/lotoops_bench_platform")
    Target.objects.create(name="lotolink-redis", kind="redis", url=REDIS)

    user = get_user_model().objects.create_user("bench")
    incident = declare_incident(
        title="API answers 502",
        category="service_outage",
        severity=Severity.objects.get(key="P1"),
        actor=user,
    )
    book = Runbook.objects.get(key="api")
    # As many processes as the procedure has diagnostics: "Run all" runs them side by side.
    worker = start_worker(env, QUEUE, concurrency=8)
    walls: list[float] = []
    sums: list[float] = []
    slowest: list[float] = []
    per_step: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, str] = {}
    order = {step.key: step.order for step in book.steps.all()}
    try:
        from diagnostics.models import WorkerHeartbeat

        wait(WorkerHeartbeat.objects.exists, timeout=60, every=0.2)
        services.run_all_diagnostics(incident, book, actor=user)  # warm-up
        wait(lambda: not CheckRun.objects.filter(finished_at__isnull=True).exists())
        for _ in range(args.repeats):
            pressed = time.perf_counter()
            runs = services.run_all_diagnostics(incident, book, actor=user)
            ids = [r.pk for r in runs]
            wait(
                lambda ids=ids: (
                    CheckRun.objects.filter(pk__in=ids, finished_at__isnull=True).count() == 0
                )
            )
            walls.append((time.perf_counter() - pressed) * 1000)
            times = []
            for run in CheckRun.objects.filter(pk__in=ids).select_related("step"):
                ms = (run.finished_at - run.started_at).total_seconds() * 1000
                per_step[run.step.key].append(ms)
                outcomes[run.step.key] = f"{run.status}/{run.outcome}"
                times.append(ms)
            sums.append(sum(times))
            slowest.append(max(times))
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        cluster.stop()

    print(
        f"\n'Run all diagnostics' of the api procedure, median of {args.repeats}; "
        f"emulated API server latency {args.latency * 1000:.0f} ms per request; "
        "1 worker x 8 processes"
    )
    print(f"{'step':<26}{'ms':>6}  result")
    for key, values in sorted(per_step.items(), key=lambda item: order[item[0]]):
        print(f"{key:<26}{statistics.median(values):>6.0f}  {outcomes[key]}")
    wall, total, slow = (statistics.median(v) for v in (walls, sums, slowest))
    print(f"\n{'wall ms':>8}{'sum ms':>9}{'slowest ms':>12}{'wall/slowest':>14}")
    print(f"{wall:>8.0f}{total:>9.0f}{slow:>12.0f}{wall / slow:>14.2f}")


if __name__ == "__main__":
    main()
