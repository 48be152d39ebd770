"""Alertmanager deliveries in: declare or join incidents, record resolutions.

One delivery is one transaction. Each firing of an alert is one row under a
unique (fingerprint, startsAt) constraint, so it lands once however many
deliveries carry it (retries, both members of an HA pair): of two deliveries
inserting the same row at once, PostgreSQL makes the second wait for the first's
commit and then finds the row. Paging listens to `incident_declared`: one
incident, one page per person.

Two paths:

- **join** (the hot one): every alert of the delivery is firing, the group already
  has an open incident and each fingerprint appears once. One INSERT ... ON
  CONFLICT DO NOTHING of every alert (with its incident) says which are new; the
  delivery record follows; the new alerts' timeline events go last, in one write,
  so the incident's row lock (the timeline's sequence) is held only from that
  write to the commit. The group's row is not locked.
- **declare** (everything else: no open incident yet, resolutions): the group's
  row is locked, so deliveries that may declare or change its incident queue
  behind each other and the second finds the first's incident.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from incidents.models import OPEN_STATUSES, EventKind, Incident, Status
from incidents.rules import inbound
from incidents.services import IncidentError, declare_incident, transition_incident
from incidents.timeline import append_event, append_events

from .alertmanager import AlertIn, PayloadIn
from .autorun import start_diagnostics
from .models import Alert, AlertGroup, Delivery, IngestToken
from .routing import Route, Router

MITIGABLE = (Status.ACKNOWLEDGED, Status.INVESTIGATING)


@dataclass
class Outcome:
    delivery: int = 0
    incidents: list[int] = field(default_factory=list)
    declared: list[int] = field(default_factory=list)
    new_alerts: int = 0
    resolved_alerts: int = 0
    repeated: int = 0
    unattached: int = 0

    def as_json(self) -> dict[str, object]:
        return self.__dict__.copy()


def route_all(payload: PayloadIn) -> list[Route]:
    """Every alert's route, before anything is written (UnknownAlert refuses the lot)."""
    router = Router()
    return [router.route(alert.labels) for alert in payload.alerts]


def ingest(
    payload: PayloadIn,
    *,
    token: IngestToken | None,
    routes: list[Route] | None = None,
    now: datetime | None = None,
) -> Outcome:
    routes = routes if routes is not None else route_all(payload)
    now = now or timezone.now()
    outcome = Outcome()
    # No savepoint inside the caller's transaction (views.after_commit): nothing here
    # carries on after an error, the whole delivery rolls back.
    with transaction.atomic(savepoint=False):
        group = _group(payload)
        if _joins_only(payload, group):
            made = _join(group, payload, outcome, now)
            outcome.delivery = _record_delivery(payload, token, group, outcome, now)
            _append_joined(group.incident, payload, routes, made, outcome)  # type: ignore[arg-type]
            return outcome
        group = _lock(group)
        # Rows claimed in key order (as the join path inserts them: two deliveries
        # never wait for each other's rows crosswise), then handled in start order.
        claims = {
            (a.fingerprint, a.startsAt): _claim(group, a)
            for a in sorted(payload.alerts, key=lambda a: (a.fingerprint, a.startsAt))
        }
        pairs = sorted(zip(payload.alerts, routes, strict=True), key=lambda p: p[0].startsAt)
        for alert, route in pairs:
            claimed = claims[(alert.fingerprint, alert.startsAt)]
            if alert.status == "firing":
                _fire(group, alert, route, claimed, outcome, now)
            else:
                _resolve(group, alert, route, claimed, outcome)
        outcome.delivery = _record_delivery(payload, token, group, outcome, now)
    return outcome


def _record_delivery(
    payload: PayloadIn,
    token: IngestToken | None,
    group: AlertGroup,
    outcome: Outcome,
    now: datetime,
) -> int:
    return Delivery.objects.create(
        token=token,
        group=group,
        received_at=now,
        status=payload.status,
        alerts=len(payload.alerts),
        truncated_alerts=payload.truncatedAlerts,
        new_alerts=outcome.new_alerts,
        resolved_alerts=outcome.resolved_alerts,
    ).pk


def _group(payload: PayloadIn) -> AlertGroup:
    """The group's row with its incident (made once: the key is unique), not locked."""
    key_hash = hashlib.sha256(payload.groupKey.encode()).hexdigest()
    group = AlertGroup.objects.select_related("incident").filter(key_hash=key_hash).first()
    if group is not None:
        return group
    group, _ = AlertGroup.objects.get_or_create(
        key_hash=key_hash, defaults={"group_key": payload.groupKey, "receiver": payload.receiver}
    )
    return group


def _lock(group: AlertGroup) -> AlertGroup:
    """The group's row, locked until the delivery commits, with its current incident."""
    return (
        AlertGroup.objects.select_for_update(of=("self",))
        .select_related("incident")
        .get(pk=group.pk)
    )


def _joins_only(payload: PayloadIn, group: AlertGroup) -> bool:
    """The delivery can only add firing alerts to the group's open incident."""
    fingerprints = {alert.fingerprint for alert in payload.alerts}
    return (
        _open(group.incident) is not None
        and payload.status == "firing"
        and all(alert.status == "firing" for alert in payload.alerts)
        and len(fingerprints) == len(payload.alerts)
    )


def _join(group: AlertGroup, payload: PayloadIn, outcome: Outcome, now: datetime) -> set[str]:
    """Insert every alert with the group's incident; the fingerprints of the new ones
    (ours to announce: another delivery's insert of the same row waits for us)."""
    table = connection.ops.quote_name(Alert._meta.db_table)
    fields = [
        Alert._meta.get_field(name)
        for name in (
            "fingerprint", "starts_at", "group", "incident", "name", "labels",
            "annotations", "generator_url", "received_at",
        )
    ]  # fmt: skip
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    row = f"({', '.join(['%s'] * len(fields))})"
    params: list[object] = []
    # In key order: two deliveries inserting the same rows wait for each other in
    # one direction only (never a deadlock).
    for alert in sorted(payload.alerts, key=lambda a: a.fingerprint):
        values = (
            alert.fingerprint, alert.startsAt, group.pk, group.incident_id, alert.name[:200],
            alert.labels, alert.annotations, alert.generatorURL, now,
        )  # fmt: skip
        params += [f.get_db_prep_save(v, connection) for f, v in zip(fields, values, strict=True)]
    key = ", ".join(connection.ops.quote_name(c) for c in ("fingerprint", "starts_at"))
    # Only quoted column names and placeholders are put in the text; values are params.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(payload.alerts))} "  # noqa: S608
        f"ON CONFLICT ({key}) DO NOTHING RETURNING {connection.ops.quote_name('fingerprint')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        made = {fingerprint for (fingerprint,) in cursor.fetchall()}
    outcome.new_alerts = len(made)
    outcome.repeated = len(payload.alerts) - len(made)
    return made


def _append_joined(
    incident: Incident, payload: PayloadIn, routes: list[Route], made: set[str], outcome: Outcome
) -> None:
    """One timeline event per new alert, in start order, in one write (the last step
    before the commit: the incident's lock is held from here only)."""
    if not made:
        return
    pairs = sorted(
        ((a, r) for a, r in zip(payload.alerts, routes, strict=True) if a.fingerprint in made),
        key=lambda p: p[0].startsAt,
    )
    append_events(
        incident,
        [
            (
                EventKind.ALERT,
                f"Alert triggered: {_describe(alert)}",
                _event_data(alert, route),
                alert.startsAt,
            )
            for alert, route in pairs
        ],
    )
    outcome.incidents.append(incident.pk)


def _open(incident: Incident | None) -> Incident | None:
    return incident if incident is not None and incident.status in OPEN_STATUSES else None


def _open_incident_for(group: AlertGroup, fingerprint: str) -> Incident | None:
    """The group's open incident, else one an earlier firing of this alert joined."""
    if _open(group.incident):
        return group.incident
    earlier = (
        Alert.objects.filter(fingerprint=fingerprint, incident__status__in=OPEN_STATUSES)
        .select_related("incident")
        .order_by("-id")
        .first()
    )
    return earlier.incident if earlier else None


def _claim(group: AlertGroup, alert: AlertIn) -> tuple[Alert, bool]:
    """This firing's row, made once: (row, True) for the delivery that made it."""
    try:
        with transaction.atomic():
            return Alert.objects.create(
                fingerprint=alert.fingerprint,
                starts_at=alert.startsAt,
                group=group,
                name=alert.name[:200],
                labels=alert.labels,
                annotations=alert.annotations,
                generator_url=alert.generatorURL,
            ), True
    except IntegrityError:
        return Alert.objects.select_for_update().get(
            fingerprint=alert.fingerprint, starts_at=alert.startsAt
        ), False


def _describe(alert: AlertIn) -> str:
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return f"{alert.name}: {text}" if text else alert.name


def _event_data(alert: AlertIn, route: Route) -> dict[str, object]:
    return {
        "fingerprint": alert.fingerprint,
        "starts_at": alert.startsAt.isoformat(),
        "labels": alert.labels,
        "severity": route.severity.key,
        "source": "alertmanager",
    }


def _fire(
    group: AlertGroup,
    alert: AlertIn,
    route: Route,
    claimed: tuple[Alert, bool],
    outcome: Outcome,
    now: datetime,
) -> None:
    row, made = claimed
    if not made:
        outcome.repeated += 1
        return
    outcome.new_alerts += 1
    incident = _open_incident_for(group, alert.fingerprint)
    first = False
    if incident is None and route.may_declare:
        incident = _declare(alert, route, now)
        outcome.declared.append(incident.pk)
        first = True
    elif incident is None:
        incident = (
            Incident.objects.filter(category=route.category, status__in=OPEN_STATUSES)
            .order_by("-declared_at")
            .first()
        )
    if incident is None:
        outcome.unattached += 1
        return
    row.incident = incident
    row.save(update_fields=["incident"])
    if not _open(group.incident):
        group.incident = incident
        group.save(update_fields=["incident"])
    append_event(
        incident,
        EventKind.ALERT,
        f"{'First alert' if first else 'Alert'} triggered: {_describe(alert)}",
        # The alert that declared the incident: the report's "First alert triggered".
        data=_event_data(alert, route) | ({"first": True} if first else {}),
        at=alert.startsAt,
    )
    if first:
        start_diagnostics(incident)
    if incident.pk not in outcome.incidents:
        outcome.incidents.append(incident.pk)


def _declare(alert: AlertIn, route: Route, now: datetime) -> Incident:
    # Within the limits a declaration from the pages or the API has (the alert's own
    # labels and annotations are kept whole on its row).
    services = [v[: inbound.MAX_SERVICE] for k in ("service", "job") if (v := alert.labels.get(k))]
    return declare_incident(
        title=(alert.annotations.get("summary", "").strip() or alert.name)[: inbound.MAX_TITLE],
        category=route.category,
        severity=route.severity,
        actor=None,
        summary=alert.annotations.get("description", "")[: inbound.MAX_SUMMARY],
        impacted_services=services,
        alert_fingerprint=alert.fingerprint,
        now=now,
    )


def _resolve(
    group: AlertGroup, alert: AlertIn, route: Route, claimed: tuple[Alert, bool], outcome: Outcome
) -> None:
    row, made = claimed
    if not made and row.resolved_at is not None:
        outcome.repeated += 1
        return
    ended = alert.ended_at or timezone.now()
    row.resolved_at = ended
    row.ends_at = alert.ended_at
    if made:
        row.incident = _open_incident_for(group, alert.fingerprint)
    row.save(update_fields=["resolved_at", "ends_at", "incident"])
    outcome.resolved_alerts += 1
    incident = row.incident
    if incident is None:
        outcome.unattached += 1
        return
    append_event(
        incident,
        EventKind.ALERT,
        f"Alert resolved: {_describe(alert)}",
        data=_event_data(alert, route) | {"ends_at": ended.isoformat(), "resolved": True},
        at=ended,
    )
    if incident.pk not in outcome.incidents:
        outcome.incidents.append(incident.pk)
    if route.mitigate_on_resolve:
        _mitigate_when_quiet(incident)


def _mitigate_when_quiet(incident: Incident) -> None:
    """Every alert of the incident resolved: an acknowledged incident moves to mitigated."""
    incident.refresh_from_db()
    if incident.status not in MITIGABLE:
        return
    if incident.alerts.filter(resolved_at__isnull=True).exists():
        return
    try:
        transition_incident(
            incident,
            Status.MITIGATED,
            actor=None,  # type: ignore[arg-type]  (LotoOps itself)
            note="every alert resolved",
        )
    except IncidentError:
        return
