"""Money at risk on payment and banca incidents: the beat's sampler and the card of
the incident page (a Panel, refreshed live when a new sample lands).

Every MONEY_AT_RISK_INTERVAL s, for each open incident of MONEY_AT_RISK_CATEGORIES,
the sampler runs the probe of the runbook step MONEY_AT_RISK_STEP (seeded:
`pay.money_at_risk`, `postgres.money_at_risk` against the platform's database; its
params hold the windows and the table's column names, editable in admin) directly,
not as a check run, so the timeline is not flooded with a result a minute. Each
reading is an ImpactSample (one per incident and interval, however many beats),
then the incident's live streams are woken (a panel update, no timeline event)."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone

from incidents import live
from incidents.access import can_work
from incidents.models import OPEN_STATUSES, ImpactSample, Incident, Severity
from incidents.panels import LiveUpdates, Message, Panel
from incidents.rules import money

from .models import RunbookStep
from .probes.base import ProbeError
from .services import default_target

log = logging.getLogger(__name__)

CHART_WIDTH, CHART_HEIGHT = 300, 80


def applies(incident: Incident) -> bool:
    return incident.category in settings.MONEY_AT_RISK_CATEGORIES


def _slot(now: datetime) -> int:
    return int(now.timestamp() // max(1.0, settings.MONEY_AT_RISK_INTERVAL))


def take_sample(incident: Incident, *, now: datetime | None = None) -> ImpactSample | None:
    """Read the money at risk of one incident and store it (None when this interval
    already has its sample). A probe that fails is stored as a sample with its error,
    so the card says why the numbers are missing."""
    now = now or timezone.now()
    slot = _slot(now)
    if ImpactSample.objects.filter(incident=incident, slot=slot).exists():
        return None
    step = RunbookStep.objects.filter(key=settings.MONEY_AT_RISK_STEP).first()
    fields: dict[str, Any] = {"probe": "", "step_key": settings.MONEY_AT_RISK_STEP}
    try:
        if step is None or step.probe_class() is None:
            raise ProbeError(f"no runbook step {settings.MONEY_AT_RISK_STEP} with a probe")
        fields["probe"] = step.probe
        target = default_target(step.target_kind)
        if target is None:
            raise ProbeError(f"no {step.get_target_kind_display()} target is configured")
        fields["target_name"] = target.name
        if refusal := target.secret_refusal():
            raise ProbeError(refusal)
        probe = step.probe_class().build(target, step.params, timeout=step.timeout_seconds)
        result = probe.run()
        fields |= _figures(result.data)
    except ProbeError as exc:
        fields["error"] = str(exc)[:2000]
    except Exception as exc:  # a bug in a probe must not stop the other incidents' samples
        log.exception("money-at-risk sample of incident %s failed", incident.pk)
        fields["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        with transaction.atomic():
            sample = ImpactSample.objects.create(
                incident=incident, taken_at=now, slot=slot, **fields
            )
    except IntegrityError:  # another beat stored this interval's sample meanwhile
        return None
    incident_id = incident.pk
    transaction.on_commit(lambda: live.publish(incident_id, 0))
    return sample


def _figures(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "window_minutes": int(data["window_minutes"]),
        "short_window_minutes": int(data["short_window_minutes"]),
        "plays_long": int(data["plays"]["long"]),
        "plays_short": int(data["plays"]["short"]),
        "users_long": int(data["users"]["long"]),
        "users_short": int(data["users"]["short"]),
        "totals": data["totals"],
        "by_banca": data["by_banca"],
        "by_state": data["by_state"],
    }


def sample_open_incidents(now: datetime | None = None) -> int:
    """The beat's sweep: one sample per open payment or banca incident."""
    taken = 0
    incidents = Incident.objects.filter(
        status__in=OPEN_STATUSES, category__in=settings.MONEY_AT_RISK_CATEGORIES
    )
    for incident in incidents:
        if take_sample(incident, now=now) is not None:
            taken += 1
    return taken


# --- the card ------------------------------------------------------------------------------


def rise_factor() -> Decimal:
    try:
        return Decimal(settings.MONEY_AT_RISK_RISE_FACTOR)
    except InvalidOperation:
        return Decimal(2)


def _series(samples: list[ImpactSample]) -> list[tuple[datetime, dict[str, int]]]:
    return [(s.taken_at, {"plays": s.plays_short} | s.short_totals()) for s in samples if s.ok]


def _chart(samples: list[ImpactSample], start: datetime) -> dict[str, Any]:
    """Inline SVG polyline of the plays pending over the short window since declaration."""
    good = [s for s in samples if s.ok]
    if not good:
        return {"points": "", "peak": 0}
    end = max(good[-1].taken_at, start + timedelta(minutes=1))
    span = (end - start).total_seconds() or 1.0
    peak = max(s.plays_short for s in good) or 1
    points = []
    for s in good:
        x = CHART_WIDTH * max(0.0, (s.taken_at - start).total_seconds()) / span
        y = CHART_HEIGHT - (CHART_HEIGHT - 4) * s.plays_short / peak
        points.append(f"{x:.1f},{y:.1f}")
    return {"points": " ".join(points), "peak": max(s.plays_short for s in good)}


def _rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [
        {
            "name": r[key],
            "currency": r["currency"],
            "long_count": r["long_count"],
            "long": money.format_money(r["long"], r["currency"]),
            "short_count": r["short_count"],
            "short": money.format_money(r["short"], r["currency"]),
        }
        for r in rows
    ]


def _higher_severity(incident: Incident) -> Severity | None:
    return (
        Severity.objects.filter(order__lt=incident.severity.order).order_by("-order", "key").first()
    )


def money_context(request: HttpRequest, incident: Incident, **_: Any) -> dict[str, Any]:
    if not applies(incident):
        return {"money": None}
    samples = list(incident.impact_samples.order_by("taken_at", "pk"))
    latest = samples[-1] if samples else None
    good = [s for s in samples if s.ok]
    last_good = good[-1] if good else None
    rise = money.sudden_rise(
        _series(samples),
        window=timedelta(seconds=settings.MONEY_AT_RISK_RISE_WINDOW),
        factor=rise_factor(),
        min_plays=settings.MONEY_AT_RISK_RISE_MIN_PLAYS,
    )
    higher = _higher_severity(incident) if rise and incident.is_open else None
    totals = []
    if last_good is not None:
        totals = [
            {
                "currency": c,
                "long_count": t["long_count"],
                "long": money.format_money(t["long"], c),
                "short_count": t["short_count"],
                "short": money.format_money(t["short"], c),
            }
            for c, t in sorted(last_good.totals.items())
        ]
    return {
        "money": {
            "latest": latest,
            "sample": last_good,
            "count": len(samples),
            "totals": totals,
            "by_banca": _rows(last_good.by_banca, "banca") if last_good else [],
            "by_state": _rows(last_good.by_state, "state") if last_good else [],
            "chart": _chart(samples, incident.declared_at),
            "chart_size": (CHART_WIDTH, CHART_HEIGHT),
            "rise": rise,
            "suggest": higher,
            "can_work": can_work(request.user, incident),
            "interval": int(settings.MONEY_AT_RISK_INTERVAL),
        }
    }


class MoneyUpdates(LiveUpdates):
    """A stream's side of the card: redraw it (out of band) when a new sample lands."""

    def __init__(self) -> None:
        self.seen: int | None = None

    def __call__(self, request: HttpRequest, incident_id: int) -> list[Message]:
        last = (
            ImpactSample.objects.filter(incident_id=incident_id)
            .aggregate(last=Max("id"))
            .get("last")
        )
        if self.seen is None or last == self.seen:
            self.seen = last or 0
            return []
        self.seen = last
        incident = Incident.objects.select_related("severity").get(pk=incident_id)
        if not applies(incident):
            return []
        context = {"incident": incident, "oob": True} | money_context(request, incident)
        html = render_to_string("diagnostics/partials/money.html", context, request)
        return [(None, "run", html)]


def latest_samples(incident_ids: list[int]) -> dict[int, Hashable]:
    """Per incident, its newest sample's id: what the stream's poll watches without Redis."""
    rows = (
        ImpactSample.objects.filter(incident_id__in=incident_ids)
        .values("incident_id")
        .annotate(last=Max("id"))
    )
    return {row["incident_id"]: row["last"] for row in rows}


MONEY_PANEL = Panel(
    name="money_at_risk",
    template="diagnostics/partials/money.html",
    context=money_context,
    live=MoneyUpdates,
    poll=latest_samples,
)
