"""The audit trail (managers and admins): a page of the latest entries in a
period, and the whole period as CSV. Reading it is itself recorded."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import audit, forms
from ..reporting.csvfile import csv_text

PERMISSION = "incidents.view_auditentry"  # the Managers and Admins groups
PAGE_LINES = 300


def _refused(request: HttpRequest) -> HttpResponse:
    reason = "The audit trail is for managers and admins."
    return render(request, "403.html", {"reason": reason}, status=403)


def _period(request: HttpRequest) -> tuple[forms.AuditForm, datetime | None, datetime | None]:
    data = request.GET.copy()
    today = timezone.localdate()
    data.setdefault("start", f"{today - timedelta(days=6):%Y-%m-%d}")
    data.setdefault("end", f"{today:%Y-%m-%d}")
    form = forms.AuditForm(data)
    if not form.is_valid():
        return form, None, None
    tz = timezone.get_current_timezone()
    start = datetime.combine(form.cleaned_data["start"], time.min, tz)
    end = datetime.combine(form.cleaned_data["end"] + timedelta(days=1), time.min, tz)
    return form, start, end


@require_GET
def audit_page(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(PERMISSION):
        return _refused(request)
    form, start, end = _period(request)
    if start is None or end is None:
        return render(request, "incidents/audit.html", {"form": form}, status=422)
    lines = audit.trail(request.user, start, end, limit=PAGE_LINES)
    context = {"form": form, "lines": lines, "query": request.GET.urlencode(), "max": PAGE_LINES}
    return render(request, "incidents/audit.html", context)


@require_GET
def audit_csv(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(PERMISSION):
        return _refused(request)
    form, start, end = _period(request)
    if start is None or end is None:
        return render(request, "incidents/audit.html", {"form": form}, status=422)
    lines = audit.trail(request.user, start, end)
    text = csv_text(audit.CSV_FIELDS, (audit.csv_row(line) for line in lines))
    audit.record(
        request.user,
        "export",
        f"exported the audit trail {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d} (CSV)",
        data={"rows": len(lines)},
    )
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="audit-{start:%Y%m%d}-{end - timedelta(days=1):%Y%m%d}.csv"'
    )
    return response
