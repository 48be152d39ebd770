"""Demo history in bulk: a year of realistic Lotolink incidents, fast.

The services are for real changes, one at a time; this command writes history
that already happened, so it builds the rows itself and inserts them in batches
of 1,000 incidents: the incidents with `bulk_create`, their timeline events and
checklist items (thirty rows an incident) with COPY on PostgreSQL or one
prepared INSERT elsewhere. Only appends: timeline events stay append-only, and
no post_save signal wakes live streams for history nobody watches. Every row is
consistent with what the services would have written: status timestamps in
lifecycle order, timeline events in time order (their ids order a timeline),
SLA deadlines from the severity, checklists from the runbook templates, object
permissions for the declarer. It is not idempotent: each run adds more.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone
from guardian.models import UserObjectPermission

from incidents.models import (
    Category,
    ChecklistItem,
    ChecklistTemplate,
    EventKind,
    Incident,
    Severity,
    Status,
    TimelineEvent,
    channel_name_for,
)
from incidents.rules.text import format_duration
from incidents.seed import seed_runbook
from incidents.services import DECLARE_PHASES

BATCH = 1000  # incidents per round trip; their events and checklist items follow them
MAX_OPEN = 30
DEMO_USERNAME = "demo"

# Severity skew of a real year: few P0s, mostly P2/P3.
SEVERITY_WEIGHTS = {"P0": 4, "P1": 16, "P2": 45, "P3": 35}
SLA_BREACH_RATE = 0.08

# category: (weight, [(title, impacted services)])
TITLES: dict[str, tuple[int, list[tuple[str, list[str]]]]] = {
    Category.SERVICE_OUTAGE: (
        26,
        [
            ("lotolink-backend pods OOMKilled", ["lotolink-backend", "kubernetes"]),
            ("lotolink-backend 502s from the ingress", ["lotolink-backend", "ingress-nginx"]),
            ("API latency p95 above 3 s", ["lotolink-backend"]),
            ("Draw results page timing out", ["lotolink-web", "lotolink-backend"]),
            ("Celery workers stuck, ticket queue growing", ["celery", "rabbitmq"]),
            ("RabbitMQ memory alarm, publishers blocked", ["rabbitmq", "lotolink-backend"]),
            ("Redis evicting session keys", ["redis", "lotolink-backend"]),
            ("Mobile app login failing", ["lotolink-mobile", "lotolink-backend"]),
            (
                "Failed deploy: lotolink-backend CrashLoopBackOff",
                ["lotolink-backend", "kubernetes"],
            ),
            ("Node pool out of capacity, pods Pending", ["kubernetes"]),
        ],
    ),
    Category.DATABASE: (
        18,
        [
            ("PostgreSQL connection pool exhausted", ["postgresql", "pgbouncer"]),
            ("PostgreSQL replica lag above 5 minutes", ["postgresql"]),
            ("Slow queries on tickets table after migration", ["postgresql", "lotolink-backend"]),
            ("PostgreSQL disk 95% full", ["postgresql"]),
            ("Deadlocks on wallet balance updates", ["postgresql", "lotolink-backend"]),
            ("Nightly backup job failed", ["postgresql", "backups"]),
        ],
    ),
    Category.PAYMENT: (
        22,
        [
            ("Stripe webhooks failing", ["stripe", "lotolink-backend"]),
            ("Stripe webhook signature verification errors", ["stripe", "lotolink-backend"]),
            ("Card payments declined with processing_error", ["stripe"]),
            ("Duplicate charges on ticket purchase", ["stripe", "lotolink-backend"]),
            ("Payouts to winners delayed", ["stripe", "lotolink-backend", "celery"]),
            ("Wallet top-ups stuck in pending", ["stripe", "lotolink-backend"]),
        ],
    ),
    Category.BANCA: (
        20,
        [
            ("Banca Central health check failing", ["banca-central"]),
            ("Banca Nacional API returning 500s", ["banca-nacional"]),
            ("Banca Real ticket sync delayed", ["banca-real", "celery"]),
            ("Banca Central TLS certificate expired", ["banca-central"]),
            ("Banca Popular timeouts on ticket validation", ["banca-popular", "lotolink-backend"]),
            ("Banca results feed missing draws", ["banca-central", "lotolink-backend"]),
        ],
    ),
    Category.SECURITY: (
        5,
        [
            ("Credential stuffing against the login endpoint", ["lotolink-backend", "waf"]),
            ("Leaked API key found in a public repository", ["lotolink-backend"]),
            ("Suspicious admin login from unknown IP", ["lotolink-admin"]),
            ("Unusual data export volume from reporting", ["postgresql", "reporting"]),
        ],
    ),
    Category.OTHER: (
        9,
        [
            ("Grafana dashboards empty, Prometheus scrape failing", ["prometheus", "grafana"]),
            ("Transactional emails not delivered", ["email", "celery"]),
            ("SMS verification codes delayed", ["sms-gateway"]),
            ("Typo on the draw results page", ["lotolink-web"]),
            ("Log shipping to Loki stopped", ["loki"]),
        ],
    ),
}

NOTES = [
    "Error rate back under 1% after the rollback.",
    "Checked the last deploy: config change to the connection pool size.",
    "Scaled lotolink-backend from 6 to 10 replicas.",
    "Restarted the stuck Celery workers; queue draining.",
    "Provider status page shows a partial outage in their region.",
    "Opened a ticket with the provider; waiting for their response.",
    "Found the slow query; adding the missing index in a hotfix.",
    "Memory limit raised to 1.5 GiB while we look for the leak.",
    "Failed webhooks replayed from the provider dashboard.",
    "No data loss: every ticket purchase accounted for in the ledger.",
    "Rotated the affected credentials.",
    "Blocked the offending IP ranges at the WAF.",
    "Metrics look stable for 30 minutes.",
]
STATUS_UPDATES = [
    "We are investigating reports of failures. Next update in 30 minutes.",
    "Cause identified; a fix is being deployed. Next update in 30 minutes.",
    "A fix is deployed and we are monitoring. Customers may retry.",
    "Impact limited to a subset of users; workaround: retry the purchase.",
    "Service is degraded but operational. Next update in 1 hour.",
]


@dataclass
class Plan:
    """One incident to write: its row, then its events and checklist items once it has a pk."""

    incident: Incident
    events: list[tuple[datetime, str, str, dict[str, Any]]] = field(default_factory=list)
    done_until: datetime | None = None  # checklist items done by then (None: none done)


class Command(BaseCommand):
    help = (
        "Create N realistic demo incidents over the last 12 months, in bulk (not idempotent: "
        "each run adds more). Optionally one open incident with a very long timeline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--incidents", type=int, required=True, help="How many (≥ 1)")
        parser.add_argument(
            "--events-per-incident",
            type=int,
            default=10,
            help="Timeline events per incident (default 10; never fewer than its lifecycle needs)",
        )
        parser.add_argument(
            "--big-timeline",
            type=int,
            default=0,
            help="Also create one open incident with this many timeline events",
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        count, per, big = (
            options["incidents"],
            options["events_per_incident"],
            options["big_timeline"],
        )
        if count < 1:
            raise CommandError(f"--incidents must be at least 1 (got {count}); nothing created.")
        if per < 1:
            raise CommandError(
                f"--events-per-incident must be at least 1 (got {per}); nothing created."
            )
        if big < 0:
            raise CommandError(f"--big-timeline must be 0 or more (got {big}); nothing created.")
        started = time.perf_counter()
        rng = random.Random(options["seed"])
        now = timezone.now()
        seed_runbook()
        open_count = min(MAX_OPEN, max(1, round(count / 100)))  # about 1%, a handful
        with transaction.atomic():
            seeder = _Seeder(rng, now, _demo_user(), per)
            # Ids grow with declaration time, as they would have.
            plans = sorted(
                (seeder.plan(is_open=i < open_count) for i in range(count)),
                key=lambda p: p.incident.declared_at,
            )
            big_plan = seeder.big_plan(big) if big else None
            if big_plan is not None:
                plans.append(big_plan)
            totals = seeder.write(plans)
        if connection.vendor == "postgresql":
            # What autovacuum would do a minute later: without it the planner still
            # believes the tables are nearly empty and picks plans for that.
            with connection.cursor() as cursor:
                for model in (Incident, TimelineEvent, ChecklistItem, UserObjectPermission):
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
        incidents = [p.incident for p in plans[:count]]
        still_open = sum(i.is_open for i in incidents)
        summary = (
            f"Seeded {count} demo incidents ({count - still_open} resolved or closed, "
            f"{still_open} open, {sum(i.sla_breached(now) for i in incidents)} SLA breached, "
            f"{sum(i.restricted for i in incidents)} restricted), {totals['events']} timeline "
            f"events, {totals['items']} checklist items in {time.perf_counter() - started:.1f} s"
        )
        if big_plan is not None:
            summary += f"; big timeline incident #{big_plan.incident.pk} has {big} events"
        self.stdout.write(summary + ".")


def _demo_user() -> AbstractBaseUser:
    users = get_user_model().objects
    user = users.filter(username=DEMO_USERNAME).first()
    if user is None:  # no password: an unusable one, nobody logs in as the demo actor
        user = users.create_user(DEMO_USERNAME, email="demo@lotolink.test", password=None)
    user.groups.add(Group.objects.get(name="Responders"))
    return user


class _Seeder:
    def __init__(
        self, rng: random.Random, now: datetime, actor: AbstractBaseUser, per: int
    ) -> None:
        self.rng = rng
        self.now = now
        self.actor = actor
        self.per = per
        self.severities = {s.key: s for s in Severity.objects.all()}
        self.templates = list(ChecklistTemplate.objects.prefetch_related("items"))
        self.categories = list(TITLES)
        self.category_weights = [TITLES[c][0] for c in self.categories]

    # --- planning (no queries) -------------------------------------------------

    def _minutes(self, low: float, high: float) -> timedelta:
        return timedelta(minutes=self.rng.uniform(low, high))

    def plan(self, *, is_open: bool) -> Plan:
        rng = self.rng
        category = rng.choices(self.categories, self.category_weights)[0]
        title, services = rng.choice(TITLES[category][1])
        severity = self.severities[
            rng.choices(list(SEVERITY_WEIGHTS), list(SEVERITY_WEIGHTS.values()))[0]
        ]
        if category == Category.SECURITY and severity.key == "P3":
            severity = self.severities["P1"]
        response = severity.response_time
        from_alert = rng.random() < 0.25
        if is_open:
            declared = self.now - self._minutes(20, 3 * 24 * 60)
        else:
            declared = self.now - self._minutes(2 * 24 * 60, 365 * 24 * 60)
        # Acknowledge within the SLA most of the time; late (breached) sometimes.
        if rng.random() < SLA_BREACH_RATE:
            took = response * rng.uniform(1.1, 4.0)
        else:
            took = response * rng.uniform(0.05, 0.9)
        chain = {Status.DECLARED: declared, Status.ACKNOWLEDGED: declared + took}
        chain[Status.INVESTIGATING] = chain[Status.ACKNOWLEDGED] + self._minutes(1, 20)
        chain[Status.MITIGATED] = chain[Status.INVESTIGATING] + self._minutes(10, 8 * 60)
        chain[Status.RESOLVED] = chain[Status.MITIGATED] + self._minutes(10, 24 * 60)
        chain[Status.CLOSED] = chain[Status.RESOLVED] + self._minutes(24 * 60, 10 * 24 * 60)
        if is_open:
            reached = rng.choice(
                [Status.DECLARED, Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MITIGATED]
            )
        else:
            if chain[Status.RESOLVED] >= self.now:  # resolved in the future: move the story back
                shift = chain[Status.RESOLVED] - self.now + self._minutes(5, 24 * 60)
                chain = {status: at - shift for status, at in chain.items()}
            reached = Status.CLOSED if chain[Status.CLOSED] < self.now else Status.RESOLVED
        steps = list(chain)
        # Keep the steps up to the one reached, and none in the future (an open
        # incident declared a few minutes ago cannot be mitigated yet).
        chain = {
            status: at
            for status, at in chain.items()
            if steps.index(status) <= steps.index(reached) and at < self.now
        }
        reached = list(chain)[-1]
        incident = Incident(
            title=title,
            category=category,
            severity=severity,
            status=reached,
            summary=f"{title}. Impact on {', '.join(services)}.",
            impacted_services=services,
            affected_users=rng.choice([None, rng.randint(1, 50), rng.randint(50, 20000)]),
            commander=self.actor if severity.key in ("P0", "P1") else None,
            declared_by=None if from_alert else self.actor,
            acknowledged_by=self.actor if Status.ACKNOWLEDGED in chain else None,
            restricted=category == Category.SECURITY,
            alert_fingerprint=f"alertmanager:{rng.getrandbits(48):012x}" if from_alert else "",
            channel_name=channel_name_for(title, declared),
            declared_at=declared,
            response_deadline=declared + response,
            acknowledged_at=chain.get(Status.ACKNOWLEDGED),
            investigating_at=chain.get(Status.INVESTIGATING),
            mitigated_at=chain.get(Status.MITIGATED),
            resolved_at=chain.get(Status.RESOLVED),
            closed_at=chain.get(Status.CLOSED),
        )
        plan = Plan(incident, done_until=chain.get(Status.RESOLVED))
        plan.events = self._lifecycle(incident, chain)
        extra = self.per - len(plan.events)
        if extra > 0 and Status.ACKNOWLEDGED in chain:
            end = chain.get(Status.RESOLVED, self.now)
            plan.events += self._chatter(incident, chain, chain[Status.ACKNOWLEDGED], end, extra)
            plan.events.sort(key=lambda e: e[0])
        return plan

    def big_plan(self, size: int) -> Plan:
        """One open incident, under investigation for two days, with `size` events."""
        severity = self.severities["P1"]
        declared = self.now - timedelta(days=2)
        title = "Stripe webhooks failing"
        chain = {
            Status.DECLARED: declared,
            Status.ACKNOWLEDGED: declared + timedelta(minutes=7),
            Status.INVESTIGATING: declared + timedelta(minutes=9),
        }
        incident = Incident(
            title=title,
            category=Category.PAYMENT,
            severity=severity,
            status=Status.INVESTIGATING,
            summary="Webhook deliveries failing intermittently for two days; long investigation.",
            impacted_services=["stripe", "lotolink-backend"],
            affected_users=4200,
            commander=self.actor,
            declared_by=self.actor,
            acknowledged_by=self.actor,
            channel_name=channel_name_for(title, declared),
            declared_at=declared,
            response_deadline=declared + severity.response_time,
            acknowledged_at=chain[Status.ACKNOWLEDGED],
            investigating_at=chain[Status.INVESTIGATING],
        )
        events = self._lifecycle(incident, chain)[:size]
        if size > len(events):
            events += self._chatter(
                incident, chain, chain[Status.INVESTIGATING], self.now, size - len(events)
            )
            events.sort(key=lambda e: e[0])
        return Plan(incident, events=events, done_until=self.now - timedelta(days=1))

    def _lifecycle(
        self, incident: Incident, chain: dict[str, datetime]
    ) -> list[tuple[datetime, str, str, dict[str, Any]]]:
        """The events the services write for each step of the chain, in their words."""
        name = DEMO_USERNAME
        sev = incident.severity
        declarer = name if incident.declared_by else "LotoOps"
        events: list[tuple[datetime, str, str, dict[str, Any]]] = [
            (
                chain[Status.DECLARED],
                EventKind.DECLARED,
                f"{declarer} declared {sev.key} {incident.get_category_display().lower()} "
                f"incident: {incident.title}",
                {
                    "severity": sev.key,
                    "category": incident.category,
                    "response_deadline": incident.response_deadline.isoformat(),
                    "channel": incident.channel_name,
                },
            )
        ]
        previous = Status.DECLARED
        for status, at in chain.items():
            if status == Status.DECLARED:
                continue
            if status == Status.ACKNOWLEDGED:
                took = at - chain[Status.DECLARED]
                met = at <= incident.response_deadline
                events.append(
                    (
                        at,
                        EventKind.ACKNOWLEDGED,
                        f"{name} acknowledged after {format_duration(took)} "
                        f"({'within' if met else 'outside'} the {sev.key} response time)",
                        {"status": status, "sla_met": met, "seconds": took.total_seconds()},
                    )
                )
                if incident.commander is not None:
                    events.append(
                        (
                            at + timedelta(seconds=30),
                            EventKind.COMMANDER,
                            f"{name} made {name} the incident commander",
                            {"commander": name},
                        )
                    )
            else:
                events.append(
                    (
                        at,
                        EventKind.STATUS,
                        f"{name} moved the incident from {Status(previous).label.lower()} "
                        f"to {Status(status).label.lower()}",
                        {"status": status, "from": previous},
                    )
                )
            previous = status
        return events

    def _chatter(
        self,
        incident: Incident,
        chain: dict[str, datetime],
        start: datetime,
        end: datetime,
        count: int,
    ) -> list[tuple[datetime, str, str, dict[str, Any]]]:
        """Notes and stakeholder status updates between `start` and `end`; an update
        is stamped with the status the incident had when it was posted."""
        span = max((end - start).total_seconds(), 1.0)
        events = []
        for _ in range(count):
            at = start + timedelta(seconds=self.rng.uniform(1.0, span))
            if self.rng.random() < 0.6:
                events.append((at, EventKind.NOTE, self.rng.choice(NOTES), {}))
            else:
                status = [s for s, entered in chain.items() if entered <= at][-1]
                data = {
                    "status": status,
                    "severity": incident.severity.key,
                    "channel": incident.channel_name,
                }
                events.append((at, EventKind.STATUS_UPDATE, self.rng.choice(STATUS_UPDATES), data))
        return events

    # --- writing (a few bulk inserts per batch) ---------------------------------

    def write(self, plans: list[Plan]) -> dict[str, int]:
        """Incidents through `bulk_create` (their pks come back), then their events and
        checklist items, thirty rows per incident, straight to the database (`_insert`):
        `bulk_create` of those spent most of its time compiling SQL per value, 37 s for
        10,000 incidents instead of about 10 s."""
        totals = {"events": 0, "items": 0}
        ctype = ContentType.objects.get_for_model(Incident)
        perms = list(
            Permission.objects.filter(
                content_type=ctype, codename__in=["view_incident", "change_incident"]
            )
        )
        ops = connection.ops
        actor_id = self.actor.pk
        for offset in range(0, len(plans), BATCH):
            batch = plans[offset : offset + BATCH]
            Incident.objects.bulk_create([p.incident for p in batch])
            events = [
                (
                    p.incident.pk,
                    ops.adapt_datetimefield_value(at),
                    kind,
                    None if kind == EventKind.DECLARED and not p.incident.declared_by else actor_id,
                    message,
                    ops.adapt_json_value(data, None),
                    seq,
                )
                for p in batch
                for seq, (at, kind, message, data) in enumerate(p.events, start=1)
            ]
            items = [row for p in batch for row in self._checklist(p)]
            grants = [
                UserObjectPermission(
                    user=self.actor,
                    permission=perm,
                    content_type=ctype,
                    object_pk=str(p.incident.pk),
                )
                for p in batch
                if p.incident.declared_by is not None
                for perm in perms
            ]
            _insert(TimelineEvent, EVENT_FIELDS, events)
            _insert(ChecklistItem, ITEM_FIELDS, items)
            UserObjectPermission.objects.bulk_create(grants, batch_size=2000)
            totals["events"] += len(events)
            totals["items"] += len(items)
        return totals

    def _checklist(self, plan: Plan) -> list[tuple[Any, ...]]:
        """The declaration checklists, and the post-incident ones once resolved (rows in
        ITEM_FIELDS order)."""
        incident = plan.incident
        adapt = connection.ops.adapt_datetimefield_value
        rows = []
        for template in self.templates:
            if template.phase in DECLARE_PHASES:
                start = incident.declared_at
            elif incident.resolved_at is not None:
                start = incident.resolved_at
            else:
                continue
            due = adapt(start + template.due_after) if template.due_after else None
            # Post-incident work is done by the time the incident is closed.
            until = incident.closed_at if template.phase not in DECLARE_PHASES else plan.done_until
            for item in template.items.all():
                done_at = None
                if until is not None and until > start and self.rng.random() < 0.95:
                    done_at = start + (until - start) * self.rng.uniform(0.05, 0.95)
                rows.append(
                    (
                        incident.pk,
                        template.phase,
                        item.text,
                        item.order,
                        due,
                        adapt(done_at),
                        self.actor.pk if done_at else None,
                    )
                )
        return rows


EVENT_FIELDS = ("incident", "created_at", "kind", "actor", "message", "data", "seq")
ITEM_FIELDS = ("incident", "phase", "text", "order", "due_at", "done_at", "done_by")


def _insert(model: type[Model], fields: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Append rows (values already adapted for the database): COPY on PostgreSQL, one
    prepared INSERT through `executemany` elsewhere (a C loop on SQLite)."""
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        placeholders = ", ".join(["%s"] * len(fields))
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})",  # noqa: S608
            rows,
        )
