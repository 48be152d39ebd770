"""Exports of one incident (Markdown, PDF) and the managers' period reports
(page, CSV, PDF)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from django.http import (
    HttpRequest,
    HttpResponse,
)
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import audit, forms
from ..access import get_incident_for, visible_incidents
from ..models import (
    OPEN_ACTION_STATUSES,
    ActionItem,
)
from ..reporting import charts
from ..reporting import figures as reports


@require_GET
def export_markdown(request: HttpRequest, pk: int) -> HttpResponse:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    incident = get_incident_for(request.user, pk)
    body = exports.incident_markdown(exports.incident_report(incident))
    audit.record(request.user, "export", f"exported #{pk}'s report (Markdown)", incident=incident)
    response = HttpResponse(body, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="incident-{pk}-report.md"'
    return response


@require_GET
def export_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    incident = get_incident_for(request.user, pk)
    body = exports.incident_pdf(exports.incident_report(incident))
    audit.record(request.user, "export", f"exported #{pk}'s report (PDF)", incident=incident)
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="incident-{pk}-report.pdf"'
    return response


def _period(request: HttpRequest) -> tuple[forms.ReportForm, Any]:
    """The bound form (last 30 days when nothing is asked) and, when valid, the report."""
    from ..reporting import exports  # fpdf2 loads only when someone exports

    data = request.GET.copy()
    if not data:
        today = timezone.localdate()
        data.update({"start": f"{today - timedelta(days=29):%Y-%m-%d}", "end": f"{today:%Y-%m-%d}"})
    form = forms.ReportForm(data)
    if not form.is_valid():
        return form, None
    d = form.cleaned_data
    tz = timezone.get_current_timezone()
    incidents = visible_incidents(request.user).filter(
        declared_at__gte=datetime.combine(d["start"], time.min, tz),
        declared_at__lt=datetime.combine(d["end"] + timedelta(days=1), time.min, tz),
    )
    filters = [f"Declared {d['start']:%Y-%m-%d} to {d['end']:%Y-%m-%d}"]
    if d.get("severity"):
        incidents = incidents.filter(severity=d["severity"])
        filters.append(f"severity {d['severity'].key}")
    if d.get("category"):
        incidents = incidents.filter(category=d["category"])
        filters.append(f"category {dict(forms.Category.choices)[d['category']]}")
    rows = reports.rows_for(incidents)
    open_items = list(
        ActionItem.objects.filter(incident__in=incidents, status__in=OPEN_ACTION_STATUSES)
        .select_related("owner")
        .order_by("due_date", "pk")
    )
    return form, exports.period_report(rows, d["start"], d["end"], ", ".join(filters), open_items)


def _invalid(request: HttpRequest, form: forms.ReportForm) -> HttpResponse:
    return render(request, "incidents/reports.html", {"form": form, "report": None}, status=422)


@require_GET
def reports_page(request: HttpRequest) -> HttpResponse:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    form, report = _period(request)
    if report is None:
        return _invalid(request, form)
    context = {
        "form": form,
        "report": report,
        "query": form.data.urlencode(),
        "rows": [(r, reports.sla_state(r, report.now)) for r in report.rows[:200]],
        "figures": [
            (
                f,
                exports.duration_text(f.mtta),
                exports.duration_text(f.mttr),
                reports.percent(f.compliance),
            )
            for f in report.figures
        ],
        "weekly_svg": charts.weekly_bars(report.weekly),
        "mttr_svg": charts.mttr_line(report.mttr_trend),
        "sla_svg": charts.sla_bars(report.figures),
    }
    return render(request, "incidents/reports.html", context)


@require_GET
def reports_csv(request: HttpRequest) -> HttpResponse:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    form, report = _period(request)
    if report is None:
        return _invalid(request, form)
    response = HttpResponse(
        exports.period_csv(report.rows, report.now), content_type="text/csv; charset=utf-8"
    )
    name = f"incidents-{report.start:%Y%m%d}-{report.end:%Y%m%d}.csv"
    _record_period_export(request, report, "CSV")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
def reports_pdf(request: HttpRequest) -> HttpResponse:
    from ..reporting import exports  # fpdf2 loads only when someone exports

    form, report = _period(request)
    if report is None:
        return _invalid(request, form)
    response = HttpResponse(exports.period_pdf(report), content_type="application/pdf")
    name = f"incidents-{report.start:%Y%m%d}-{report.end:%Y%m%d}.pdf"
    _record_period_export(request, report, "PDF")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _record_period_export(request: HttpRequest, report: Any, kind: str) -> None:
    audit.record(
        request.user,
        "export",
        f"exported the period report ({kind}): {report.filters}",
        data={"incidents": len(report.rows)},
    )
