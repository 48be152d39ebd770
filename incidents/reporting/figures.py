"""Figures of a period's incidents: MTTA, MTTR and SLA compliance per severity,
weekly series for the charts. Pure over rows loaded in one query."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from statistics import fmean

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from ..models import (
    OPEN_ACTION_STATUSES,
    Incident,
    RegulatoryClock,
)
from ..paging.regulatory import snapshot as regulatory_snapshot
from ..rules import regulatory, sla
from ..rules.sla import BREACHED, MET, PENDING

SEVERITY_KEYS = ("P0", "P1", "P2", "P3")


@dataclass(frozen=True)
class Row:
    """One incident as the period report sees it."""

    pk: int
    title: str
    severity: str
    category: str
    status: str
    restricted: bool
    declared_at: datetime
    response_deadline: datetime
    acknowledged_at: datetime | None = None
    investigating_at: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    reopened_at: datetime | None = None
    open_action_items: int = 0
    # "<flag>: deadline <iso>, <state>" per regulatory clock, "; "-joined
    regulatory: str = ""


TIME_FIELDS = (
    "declared_at",
    "response_deadline",
    "acknowledged_at",
    "investigating_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    "reopened_at",
)


def rows_for(incidents: QuerySet[Incident]) -> list[Row]:
    """One query, whatever the number of incidents."""
    values = (
        incidents.annotate(
            open_items=Count(
                "action_items", filter=Q(action_items__status__in=OPEN_ACTION_STATUSES)
            )
        )
        .order_by("declared_at", "pk")
        .values_list(
            "pk",
            "title",
            "severity__key",
            "category",
            "status",
            "restricted",
            *TIME_FIELDS,
            "open_items",
        )
    )
    rows = [Row(*v) for v in values]
    return _with_clocks(rows)


def _with_clocks(rows: list[Row]) -> list[Row]:
    """Each row's regulatory clocks, in one more query."""
    if not rows:
        return rows
    now = timezone.now()
    found: dict[int, list[str]] = defaultdict(list)
    for clock in RegulatoryClock.objects.filter(incident_id__in=[r.pk for r in rows]).order_by(
        "deadline", "flag"
    ):
        snap = regulatory_snapshot(clock)
        verdict = regulatory.verdict(snap, now)
        done = f" {clock.done_at.isoformat()}" if clock.done_at else ""
        found[clock.incident_id].append(
            f"{clock.flag}: deadline {clock.deadline.isoformat()}, {verdict}{done}"
        )
    return [replace(r, regulatory="; ".join(found[r.pk])) if r.pk in found else r for r in rows]


def tta(row: Row) -> timedelta | None:
    return row.acknowledged_at - row.declared_at if row.acknowledged_at else None


def ttr(row: Row) -> timedelta | None:
    return row.resolved_at - row.declared_at if row.resolved_at else None


def sla_state(row: Row, now: datetime) -> str:
    return sla.verdict(row.acknowledged_at, row.response_deadline, now)


def mean(deltas: list[timedelta]) -> timedelta | None:
    return timedelta(seconds=fmean(d.total_seconds() for d in deltas)) if deltas else None


@dataclass(frozen=True)
class Figures:
    """MTTA, MTTR and SLA compliance of a group of incidents."""

    label: str
    count: int
    acknowledged: int
    mtta: timedelta | None
    resolved: int
    mttr: timedelta | None
    met: int
    breached: int
    pending: int

    @property
    def compliance(self) -> float | None:
        judged = self.met + self.breached
        return self.met / judged if judged else None


def figures(label: str, rows: list[Row], now: datetime) -> Figures:
    ttas = [d for d in map(tta, rows) if d is not None]
    ttrs = [d for d in map(ttr, rows) if d is not None]
    states = [sla_state(r, now) for r in rows]
    return Figures(
        label=label,
        count=len(rows),
        acknowledged=len(ttas),
        mtta=mean(ttas),
        resolved=len(ttrs),
        mttr=mean(ttrs),
        met=states.count(MET),
        breached=states.count(BREACHED),
        pending=states.count(PENDING),
    )


def by_severity(rows: list[Row], now: datetime) -> list[Figures]:
    """One line per severity (P0–P3, then any other key), and the total last."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.severity].append(row)
    keys = [k for k in SEVERITY_KEYS if k in groups] + sorted(set(groups) - set(SEVERITY_KEYS))
    return [figures(k, groups[k], now) for k in keys] + [figures("All", rows, now)]


def week_start(when: datetime) -> date:
    day = timezone.localtime(when).date()
    return day - timedelta(days=day.weekday())


def weeks_between(start: date, end: date) -> list[date]:
    first = start - timedelta(days=start.weekday())
    return [first + timedelta(weeks=i) for i in range((end - first).days // 7 + 1)]


def weekly_by_severity(
    rows: list[Row], start: date, end: date
) -> list[tuple[date, dict[str, int]]]:
    """Incidents declared per week (Monday first), split by severity."""
    counts: dict[date, dict[str, int]] = {w: defaultdict(int) for w in weeks_between(start, end)}
    for row in rows:
        counts.setdefault(week_start(row.declared_at), defaultdict(int))[row.severity] += 1
    return [(w, dict(counts[w])) for w in sorted(counts)]


def weekly_mttr(rows: list[Row], start: date, end: date) -> list[tuple[date, timedelta | None]]:
    """MTTR of the incidents declared each week (None: nothing resolved that week)."""
    groups: dict[date, list[timedelta]] = {w: [] for w in weeks_between(start, end)}
    for row in rows:
        if (d := ttr(row)) is not None:
            groups.setdefault(week_start(row.declared_at), []).append(d)
    return [(w, mean(groups[w])) for w in sorted(groups)]


def hours(delta: timedelta | None) -> str:
    return "" if delta is None else f"{delta.total_seconds() / 3600:.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
