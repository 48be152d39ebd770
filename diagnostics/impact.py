"""Money at risk on payment and banca incidents: the beat's sampler and the card of
the incident page (a Panel, refreshed live when a new sample lands).

Every MONEY_AT_RISK_INTERVAL s, for each open incident of MONEY_AT_RISK_CATEGORIES,
the sampler runs the probe of the runbook step MONEY_AT_RISK_STEP (seeded:
`pay.money_at_risk`, `postgres.money_at_risk` against the platform's database; its
params hold the windows and the table's column names, editable in admin) directly,
not as a check run, so the timeline is not flooded with a result a minute. Each
reading is an ImpactSample (one per incident and interval, however many beats),
then the incident's live streams are woken (a panel update, no timeline event).

When such an incident is resolved (verified recovery, an override, any path through
`transition_incident`), one more reading is taken at that moment: queued on commit
(never under the incident's lock), taken by a worker within the probe's timeout,
stored as the reading for that resolution; the post-mortem's Impact section then
says what was at risk at resolution (and, when that reading failed, that its
figure is the last reading before resolution, with its time)."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.dispatch import receiver
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone

from incidents import live
from incidents import signals as incident_signals
from incidents.access import can_work
from incidents.models import OPEN_STATUSES, ImpactSample, Incident, Severity, Status
from incidents.panels import LiveUpdates, Message, Panel
from incidents.postincident.postmortem import redraw_impact
from incidents.rules import money

from .models import RunbookStep
from .probes.base import ProbeError
from .services import default_target

log = logging.getLogger(__name__)

CHART_WIDTH, CHART_HEIGHT = 300, 80
# A reading taken later than this after the resolution is not "at resolution".
AT_RESOLUTION_WITHIN = 60.0


def applies(incident: Incident) -> bool:
    return incident.category in settings.MONEY_AT_RISK_CATEGORIES


def _slot(now: datetime) -> int:
    return int(now.timestamp() // max(1.0, settings.MONEY_AT_RISK_INTERVAL))


def take_sample(
    incident: Incident, *, now: datetime | None = None, resolution: datetime | None = None
) -> ImpactSample | None:
    """Read the money at risk of one incident and store it (None when this interval
    already has its sample, or, with `resolution`, that resolution its reading). A
    probe that fails is stored as a sample with its error, so the card says why the
    numbers are missing."""
    now = now or timezone.now()
    slot = _slot(now)
    taken = ImpactSample.objects.filter(incident=incident)
    if resolution is not None:
        taken = taken.filter(for_resolution=resolution)
    else:
        taken = taken.filter(slot=slot, for_resolution__isnull=True)
    if taken.exists():
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
        if refusal := target.run_refusal():
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
                incident=incident, taken_at=now, slot=slot, for_resolution=resolution, **fields
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


# --- the reading at resolution ---------------------------------------------------------


@receiver(incident_signals.incident_resolved, sender=Incident, dispatch_uid="money-at-resolution")
def read_at_resolution(incident: Incident, now: datetime, **_: Any) -> None:
    """In the resolving transaction (the incident is locked): queue the reading for
    after the commit. The probe never runs under the lock, nor in the transaction."""
    if not applies(incident):
        return
    incident_id = incident.pk

    def send() -> None:
        # The task module imports this one.
        from .tasks import sample_money_at_resolution

        try:
            sample_money_at_resolution.apply_async((incident_id, now.isoformat()))
        except Exception as exc:  # no broker: the post-mortem says the reading is missing
            log.warning("could not queue the reading at resolution: %s", type(exc).__name__)

    transaction.on_commit(send)


def sample_at_resolution(
    incident_id: int, resolved_at: datetime, *, now: datetime | None = None
) -> ImpactSample | None:
    """The reading for the resolution at `resolved_at` (a worker's task). None when
    the incident has been reopened since (or resolved again: that resolution queued
    its own), or this resolution has its reading already. A worker that picks the
    task up more than AT_RESOLUTION_WITHIN s after the resolution does not read:
    what it would find is not the figure at resolution, and the sample says so."""
    now = now or timezone.now()
    incident = Incident.objects.filter(pk=incident_id).first()
    if (
        incident is None
        or incident.resolved_at != resolved_at
        or incident.status not in (Status.RESOLVED, Status.CLOSED)
    ):
        return None
    late = (now - resolved_at).total_seconds()
    if late > AT_RESOLUTION_WITHIN:
        sample = _store_missing(
            incident,
            now,
            resolved_at,
            f"Not read: a worker took the reading at resolution up {late:.0f} s after the "
            f"resolution (more than {AT_RESOLUTION_WITHIN:.0f} s).",
        )
    else:
        sample = take_sample(incident, now=now, resolution=resolved_at)
    if sample is not None:
        redraw_impact(incident, sample)
    return sample


def _store_missing(
    incident: Incident, now: datetime, resolution: datetime, why: str
) -> ImpactSample | None:
    try:
        with transaction.atomic():
            sample = ImpactSample.objects.create(
                incident=incident,
                taken_at=now,
                slot=_slot(now),
                for_resolution=resolution,
                probe="",
                step_key=settings.MONEY_AT_RISK_STEP,
                error=why,
            )
    except IntegrityError:
        return None
    incident_id = incident.pk
    transaction.on_commit(lambda: live.publish(incident_id, 0))
    return sample


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
