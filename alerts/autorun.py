"""The diagnostics an alert starts when it declares an incident: per category, the
procedures' "Run all", through the engine's normal path (diagnostics.services)."""

from __future__ import annotations

from diagnostics.models import CheckRun
from diagnostics.services import CheckError, run_all_diagnostics
from incidents.models import EventKind, Incident
from incidents.timeline import append_event

from .models import AutoRun


def start_diagnostics(incident: Incident) -> list[CheckRun]:
    """Queue them (on commit) as LotoOps itself (actor None: no person asked);
    a procedure with nothing runnable says why on the timeline instead."""
    runs: list[CheckRun] = []
    rules = AutoRun.objects.filter(category=incident.category, enabled=True).select_related(
        "runbook"
    )
    for rule in rules.order_by("runbook__order"):
        try:
            runs += run_all_diagnostics(incident, rule.runbook, actor=None)  # type: ignore[arg-type]
        except CheckError as exc:
            append_event(
                incident,
                EventKind.CHECK_RUN,
                f"Automatic diagnostics of “{rule.runbook.title}” did not start: {exc}",
                data={"runbook": rule.runbook.key, "auto": True},
            )
    return runs
