"""/metrics: LotoOps's own state for Prometheus to scrape.

Figures come from the database at scrape time (so every web process answers
the same, whichever the load balancer picks), plus this process's open live
streams. Protected by a bearer token (METRICS_TOKEN); without one the endpoint
is off (404), so nothing is exposed by default.

Families (all prefixed `lotoops_`): open incidents and SLA-breached open
incidents by severity; time to acknowledge over the last 24 h (summary); check
runs finished in the last 24 h by status and their duration (summary); queue
depth and the age of the oldest waiting item per queue class; workers up; live
streams open in this process; notifications by status in the last 24 h; requests
in flight in this process and those it refused as busy (lotoops/inflight.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, F, Max, Min, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from diagnostics.models import CheckRun, RunStatus, WorkerHeartbeat
from incidents import live
from incidents.models import OPEN_STATUSES, Incident, Notification, NotificationStatus, Severity
from lotoops import inflight

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW = timedelta(hours=24)


def _count_by(rows: QuerySet[Any], field: str) -> dict[Any, int]:
    """{value of `field`: how many rows have it}, in one query."""
    return dict(rows.values(field).annotate(n=Count("pk")).values_list(field, "n"))


class LotoOpsCollector(Collector):
    def collect(self) -> Iterator[Any]:
        now = timezone.now()
        since = now - WINDOW
        yield from self._incidents(now, since)
        yield from self._check_runs(now, since)
        yield from self._notifications(now, since)
        workers = GaugeMetricFamily("lotoops_workers_up", "Celery workers with a recent heartbeat")
        recent = now - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE)
        workers.add_metric([], WorkerHeartbeat.objects.filter(seen_at__gte=recent).count())
        yield workers
        streams = GaugeMetricFamily(
            "lotoops_live_streams",
            "Live streams (incident pages, dashboards) open in this web process",
        )
        streams.add_metric([], sum(live.active_streams.values()))
        yield streams
        limiter = inflight.current
        busy = GaugeMetricFamily(
            "lotoops_web_requests_in_flight", "Requests in Django in this web process"
        )
        busy.add_metric([], limiter.in_flight if limiter else 0)
        yield busy
        refused = CounterMetricFamily(
            "lotoops_web_requests_refused",
            "Requests this web process answered 503 after waiting WEB_QUEUE_WAIT for a turn",
        )
        refused.add_metric([], limiter.refused if limiter else 0)
        yield refused

    def _incidents(self, now: Any, since: Any) -> Iterator[Any]:
        open_ = GaugeMetricFamily("lotoops_open_incidents", "Open incidents", labels=["severity"])
        breached = GaugeMetricFamily(
            "lotoops_sla_breached_incidents",
            "Open incidents not acknowledged within their severity's response time",
            labels=["severity"],
        )
        counts = _count_by(Incident.objects.filter(status__in=OPEN_STATUSES), "severity__key")
        late = _count_by(
            Incident.objects.filter(status__in=OPEN_STATUSES).filter(
                acknowledged_at__isnull=True, response_deadline__lt=now
            ),
            "severity__key",
        )
        for key in Severity.objects.order_by("order").values_list("key", flat=True):
            open_.add_metric([key], counts.get(key, 0))
            breached.add_metric([key], late.get(key, 0))
        yield open_
        yield breached
        acked = Incident.objects.filter(acknowledged_at__gte=since).aggregate(
            n=Count("pk"), total=Sum(F("acknowledged_at") - F("declared_at"))
        )
        total = acked["total"].total_seconds() if acked["total"] else 0.0
        yield SummaryMetricFamily(
            "lotoops_time_to_acknowledge_seconds",
            "Time from declaration to acknowledgement, incidents acknowledged in the last 24 h",
            count_value=acked["n"],
            sum_value=total,
        )

    def _check_runs(self, now: Any, since: Any) -> Iterator[Any]:
        runs = GaugeMetricFamily(
            "lotoops_check_runs", "Check runs finished in the last 24 h", labels=["status"]
        )
        by_status = _count_by(CheckRun.objects.filter(finished_at__gte=since), "status")
        for status in RunStatus.values:
            runs.add_metric([status], by_status.get(status, 0))
        yield runs
        took = CheckRun.objects.filter(finished_at__gte=since, started_at__isnull=False).aggregate(
            n=Count("pk"), total=Sum(F("finished_at") - F("started_at"))
        )
        yield SummaryMetricFamily(
            "lotoops_check_run_duration_seconds",
            "Duration of check runs finished in the last 24 h",
            count_value=took["n"],
            sum_value=took["total"].total_seconds() if took["total"] else 0.0,
        )
        depth = GaugeMetricFamily(
            "lotoops_queue_depth", "Work waiting for a worker, by queue class", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "lotoops_queue_oldest_seconds",
            "Age of the oldest work waiting for a worker, by queue class",
            labels=["queue"],
        )
        queued = CheckRun.objects.filter(status=RunStatus.QUEUED).aggregate(
            n=Count("pk"), first=Min("queued_at")
        )
        due = Notification.objects.filter(
            status=NotificationStatus.PENDING, due_at__lte=now
        ).aggregate(n=Count("pk"), first=Min("due_at"))
        for queue, row in (("checks", queued), ("paging", due)):
            depth.add_metric([queue], row["n"])
            oldest.add_metric([queue], (now - row["first"]).total_seconds() if row["first"] else 0)
        yield depth
        yield oldest

    def _notifications(self, now: Any, since: Any) -> Iterator[Any]:
        told = GaugeMetricFamily(
            "lotoops_notifications",
            "Notifications created in the last 24 h, by status",
            labels=["status"],
        )
        by_status = _count_by(Notification.objects.filter(created_at__gte=since), "status")
        for status in NotificationStatus.values:
            told.add_metric([status], by_status.get(status, 0))
        yield told
        last = Notification.objects.filter(status=NotificationStatus.FAILED).aggregate(
            at=Max("created_at")
        )["at"]
        failed = GaugeMetricFamily(
            "lotoops_last_notification_failure_timestamp_seconds",
            "When the last notification failed for good (0: never)",
        )
        failed.add_metric([], last.timestamp() if last else 0)
        yield failed


def _authorised(request: HttpRequest) -> bool:
    """Only `Authorization: Bearer <token>` (the scheme case-insensitive, as RFC 9110
    has it): a bare token, or any other scheme, is refused."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return bool(token) and hmac.compare_digest(given.strip().encode(), token.encode())


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("metrics are off: set METRICS_TOKEN")
    if not _authorised(request):
        response = HttpResponse("a valid bearer token is needed\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="lotoops-metrics"'
        return response
    registry = CollectorRegistry()
    registry.register(LotoOpsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE)
