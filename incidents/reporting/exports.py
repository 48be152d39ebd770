"""Exports: one incident's report (Markdown in the runbook template's exact structure,
and PDF with the same facts), and the period report (CSV, PDF with charts).

PDFs are drawn with fpdf2 (pure Python, installs from PyPI alone) on
`pdfdoc.ReportPDF`: every character kept (DejaVu Sans, Noto Sans CJK as fallback, a
placeholder for what no font has), tables that wrap. The CSV starts with a UTF-8 BOM:
without it Excel reads the file as the system's code page and garbles accents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any

from django.utils import timezone
from fpdf.enums import XPos, YPos

from ..models import (
    ActionItem,
    Category,
    EvidenceFile,
    Incident,
    PostMortem,
    RegulatoryClock,
    Status,
)
from ..paging.regulatory import snapshot as regulatory_snapshot
from ..postincident.milestones import KeyTime, key_times, milestones
from ..postincident.postmortem import TimelineLine, draft_for, report_events, timeline_lines
from ..rules import regulatory as regulatory_rule
from ..rules.markdown import safe_markdown
from ..rules.text import format_duration
from ..timeline import actor_name
from . import figures as reports
from .csvfile import csv_text
from .pdfdoc import NOT_WRITTEN, ReportPDF

SEVERITY_RGB = {
    "P0": (179, 18, 27),
    "P1": (217, 72, 15),
    "P2": (176, 136, 0),
    "P3": (92, 107, 128),
}


@dataclass
class IncidentReport:
    """Everything one incident's report shows, loaded in a fixed number of queries."""

    incident: Incident
    postmortem: PostMortem
    timeline: list[TimelineLine]
    action_items: list[ActionItem]
    evidence: list[EvidenceFile] = field(default_factory=list)
    clocks: list[RegulatoryClock] = field(default_factory=list)
    key_times: list[KeyTime] = field(default_factory=list)


def incident_report(incident: Incident) -> IncidentReport:
    """The saved post-mortem, or a prefilled draft (unsaved) when none exists yet."""
    postmortem = PostMortem.objects.filter(incident=incident).first() or draft_for(incident)
    if postmortem.pk:
        events, found = report_events(postmortem)
    else:
        everything = list(incident.timeline.order_by("created_at", "id"))
        found = milestones(everything)
        ids = set(postmortem.timeline_event_ids)
        events = [e for e in everything if e.pk in ids]
    items = list(incident.action_items.select_related("owner").order_by("due_date", "pk"))
    files = list(incident.evidence_files.select_related("created_by").order_by("id"))
    clocks = list(incident.regulatory_clocks.select_related("done_by").order_by("deadline"))
    return IncidentReport(
        incident,
        postmortem,
        timeline_lines(events, found),
        items,
        files,
        clocks,
        key_times(incident, found),
    )


def clock_row(clock: RegulatoryClock, now: datetime | None = None) -> list[str]:
    """Obligation, flag, started, deadline, state (done on time / late, by whom, how)."""
    snap = regulatory_snapshot(clock)
    verdict = regulatory_rule.verdict(snap, now or timezone.now())
    stopped = _local(clock.stopped_at or clock.started_at)
    state = {
        regulatory_rule.PENDING: "not done yet",
        regulatory_rule.OVERDUE: "OVERDUE, not done",
        regulatory_rule.STOPPED: f"stopped {stopped:%Y-%m-%d %H:%M} (flag cleared)",
    }.get(verdict)
    if state is None:
        state = (
            f"done {'on time' if verdict == regulatory_rule.MET else 'late'} "
            f"{_local(clock.done_at or clock.deadline):%Y-%m-%d %H:%M} by "
            f"{actor_name(clock.done_by)}: {clock.done_note}"
        )
    return [
        clock.obligation,
        clock.flag.replace("_", " "),
        f"{_local(clock.started_at):%Y-%m-%d %H:%M %Z}",
        f"{_local(clock.deadline):%Y-%m-%d %H:%M %Z}",
        state,
    ]


def key_time_text(key: KeyTime) -> str:
    """`09:30 (30m after the first alert)`, or that it is not known."""
    if key.at is None or key.after is None:
        return "not marked yet"
    return f"{_local(key.at):%H:%M} ({format_duration(key.after)} after the first alert)"


# --- shared wording ---------------------------------------------------------------------


def _local(when: datetime) -> datetime:
    return timezone.localtime(when)


def report_date(incident: Incident) -> str:
    return f"{_local(incident.declared_at):%Y-%m-%d}"


def report_duration(incident: Incident) -> str:
    """`HH:MM - HH:MM (X hours)`, declaration to final resolution."""
    start = _local(incident.declared_at)
    if incident.resolved_at is None:
        return f"{start:%H:%M} - ongoing"
    end = _local(incident.resolved_at)
    hours = (incident.resolved_at - incident.declared_at).total_seconds() / 3600
    return f"{start:%H:%M} - {end:%H:%M} ({hours:.1f} hours)"


def timeline_entry(line: TimelineLine, day: str) -> tuple[str, str]:
    """(HH:MM, text); an event on another day than the report's says which."""
    at = _local(line.at)
    text = line.text if f"{at:%Y-%m-%d}" == day else f"{line.text} ({at:%Y-%m-%d})"
    return f"{at:%H:%M}", text


def owner_handle(item: ActionItem) -> str:
    return f"@{item.owner.get_username()}" if item.owner else "unassigned"


def impact_lines(pm: PostMortem) -> list[tuple[str, str]]:
    return [
        ("Number of affected users", pm.impact_users or NOT_WRITTEN),
        ("Revenue impact", pm.impact_revenue or NOT_WRITTEN),
        ("Data impact", pm.impact_data or NOT_WRITTEN),
    ]


# --- Markdown -----------------------------------------------------------------------------


def _md_safe(text: str) -> str:
    """What people wrote, made harmless in any Markdown viewer: HTML shown as text
    (never a tag), and a link kept only when it goes to an http(s) address; any
    other (javascript:, data:, file:, …) keeps its text and loses its target
    (found by a CommonMark parser: incidents.rules.markdown)."""
    return safe_markdown(text)


def _md_text(text: str) -> str:
    """Free text kept inside its section: a line that would start a heading is escaped."""
    text = _md_safe(text.strip()) or NOT_WRITTEN
    return "\n".join("\\" + ln if ln.lstrip().startswith("#") else ln for ln in text.splitlines())


def _md_cell(text: str) -> str:
    return _md_safe(" ".join(text.split())).replace("|", "\\|") or "—"


def _md_inline(text: str) -> str:
    return _md_safe(" ".join(text.split()))


def incident_markdown(report: IncidentReport) -> str:
    incident, pm = report.incident, report.postmortem
    day = report_date(incident)
    lines = [
        f"# Incident Report: {_md_inline(pm.title or incident.title)}",
        "",
        f"**Date:** {day}",
        f"**Duration:** {report_duration(incident)}",
        f"**Severity:** {incident.severity.key}",
        f"**Author:** {_md_inline(pm.author) or 'Unknown'}",
        *[f"**{key.label}:** {key_time_text(key)}" for key in report.key_times],
        "",
        "## Summary",
        _md_text(pm.summary),
        "",
        "## Timeline",
    ]
    for line in report.timeline:
        at, text = timeline_entry(line, day)
        lines.append(f"- {at} - {_md_inline(text)}")
    if not report.timeline:
        lines.append("- No events chosen.")
    lines += ["", "## Root Cause", _md_text(pm.root_cause), "", "## Impact"]
    lines += [f"- {label}: {_md_inline(value)}" for label, value in impact_lines(pm)]
    if report.clocks:
        lines += [
            "",
            "## Regulatory Deadlines",
            "| Obligation | Flag | Started | Deadline | State |",
        ]
        lines += ["|------------|------|---------|----------|-------|"]
        lines += [f"| {' | '.join(_md_cell(v) for v in clock_row(c))} |" for c in report.clocks]
    lines += ["", "## Resolution", _md_text(pm.resolution), "", "## Action Items"]
    lines += ["| Item | Owner | Due Date | Status |", "|------|-------|----------|--------|"]
    for item in report.action_items:
        due = f"{item.due_date:%Y-%m-%d}" if item.due_date else "—"
        lines.append(
            f"| {_md_cell(item.text)} | {owner_handle(item)} | {due} | "
            f"{item.get_status_display()} |"
        )
    lines += ["", "## Lessons Learned", _md_text(pm.lessons_learned), ""]
    if report.evidence:
        lines += ["## Evidence", "| File | SHA-256 | Size | Stored by | Stored at |"]
        lines += ["|------|---------|------|-----------|-----------|"]
        lines += [
            f"| {' | '.join(_md_cell(v) for v in evidence_row(f))} |" for f in report.evidence
        ]
        lines.append("")
    return "\n".join(lines)


def evidence_row(file: EvidenceFile) -> list[str]:
    """File, full SHA-256, size in bytes, who stored it and when."""
    who = actor_name(file.created_by)
    return [
        file.name,
        file.sha256,
        f"{file.size} bytes",
        who,
        f"{_local(file.created_at):%Y-%m-%d %H:%M:%S %Z}",
    ]


# --- one incident as PDF -------------------------------------------------------------------


def incident_pdf(report: IncidentReport) -> bytes:
    incident, pm = report.incident, report.postmortem
    title = f"Incident Report: {pm.title or incident.title}"
    pdf = ReportPDF(f"Incident #{incident.pk} report")
    pdf.add_page()
    pdf.heading(title, 16)
    day = report_date(incident)
    pdf.field("Date", day)
    pdf.field("Duration", report_duration(incident))
    pdf.field("Severity", incident.severity.key)
    pdf.field("Author", pm.author or "Unknown")
    for key in report.key_times:
        pdf.field(key.label, key_time_text(key))
    pdf.heading("Summary")
    pdf.para(pm.summary)
    pdf.heading("Timeline")
    pdf.set_font("DejaVu", "", 9)
    for line in report.timeline or [TimelineLine(incident.declared_at, "No events chosen.")]:
        at, text = timeline_entry(line, day)
        pdf.set_font("DejaVu", "B", 9)
        pdf.cell(12, 5, at)
        pdf.set_font("DejaVu", "", 9)
        pdf.multi_cell(0, 5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.heading("Root Cause")
    pdf.para(pm.root_cause)
    pdf.heading("Impact")
    for label, value in impact_lines(pm):
        pdf.para(f"• {label}: {value}")
    if report.clocks:
        pdf.heading("Regulatory Deadlines")
        for clock in report.clocks:
            obligation, flag, started, deadline, state = clock_row(clock)
            pdf.para(f"• {obligation} ({flag}): started {started}, deadline {deadline}; {state}")
    pdf.heading("Resolution")
    pdf.para(pm.resolution)
    pdf.heading("Action Items")
    pdf.grid(
        ["Item", "Owner", "Due Date", "Status"],
        [96, 34, 25, 25],
        [
            [
                " ".join(i.text.split()),
                owner_handle(i),
                f"{i.due_date:%Y-%m-%d}" if i.due_date else "—",
                i.get_status_display(),
            ]
            for i in report.action_items
        ]
        or [["No action items.", "", "", ""]],
        size=9,
    )
    pdf.heading("Lessons Learned")
    pdf.para(pm.lessons_learned)
    if report.evidence:
        pdf.heading("Evidence")
        for file in report.evidence:
            name, sha256, size, who, when = evidence_row(file)
            pdf.para(f"{name}: {size}, stored by {who} at {when}\nSHA-256 {sha256}", size=9)
    return bytes(pdf.output())


# --- the period report --------------------------------------------------------------------


CSV_FIELDS = [
    "id",
    "title",
    "severity",
    "category",
    "status",
    "restricted",
    *reports.TIME_FIELDS,
    "time_to_acknowledge_seconds",
    "time_to_resolve_seconds",
    "sla",
    "open_action_items",
    "regulatory_deadlines",
]


def _label(choices: Any, key: str) -> str:
    """A choice's label for people (the PDF); the CSV keeps the stable keys."""
    try:
        return str(choices(key).label)
    except ValueError:
        return key


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _seconds(delta: timedelta | None) -> str:
    return "" if delta is None else str(int(delta.total_seconds()))


def csv_row(row: reports.Row, now: datetime) -> dict[str, Any]:
    return {
        "id": row.pk,
        "title": row.title,
        "severity": row.severity,
        "category": row.category,
        "status": row.status,
        "restricted": "yes" if row.restricted else "no",
        **{name: _iso(getattr(row, name)) for name in reports.TIME_FIELDS},
        "time_to_acknowledge_seconds": _seconds(reports.tta(row)),
        "time_to_resolve_seconds": _seconds(reports.ttr(row)),
        "sla": reports.sla_state(row, now),
        "open_action_items": row.open_action_items,
        "regulatory_deadlines": row.regulatory,
    }


def period_csv(rows: list[reports.Row], now: datetime) -> str:
    """One row per incident, with a header row, after a UTF-8 BOM (reads back with
    csv.DictReader once decoded as utf-8-sig)."""
    return csv_text(CSV_FIELDS, ([csv_row(row, now)[name] for name in CSV_FIELDS] for row in rows))


@dataclass
class PeriodReport:
    start: date
    end: date
    filters: str
    rows: list[reports.Row]
    figures: list[reports.Figures]
    weekly: list[tuple[date, dict[str, int]]]
    mttr_trend: list[tuple[date, timedelta | None]]
    open_items: list[ActionItem]
    now: datetime


def period_report(
    rows: list[reports.Row], start: date, end: date, filters: str, open_items: list[ActionItem]
) -> PeriodReport:
    now = timezone.now()
    return PeriodReport(
        start=start,
        end=end,
        filters=filters,
        rows=rows,
        figures=reports.by_severity(rows, now),
        weekly=reports.weekly_by_severity(rows, start, end),
        mttr_trend=reports.weekly_mttr(rows, start, end),
        open_items=open_items,
        now=now,
    )


def _short(value: datetime | None) -> str:
    return f"{_local(value):%m-%d %H:%M}" if value else "—"


def duration_text(delta: timedelta | None) -> str:
    return format_duration(delta) if delta is not None else "—"


def period_pdf(report: PeriodReport) -> bytes:
    pdf = ReportPDF(f"Incident report {report.start} to {report.end}", orientation="L")
    pdf.add_page()
    pdf.heading(f"Incident report {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}", 16)
    pdf.para(f"{len(report.rows)} incidents. {report.filters}", 9)
    pdf.para(
        "MTTA: mean time from declaration to acknowledgement (acknowledged incidents). "
        "MTTR: mean time from declaration to final resolution (resolved incidents; a reopened "
        "one counts with its last resolution). SLA met: acknowledged within the severity's "
        "response time; pending ones (unacknowledged, deadline not yet passed) are not counted.",
        8,
    )
    pdf.heading("By severity")
    pdf.grid(
        [
            "Severity",
            "Incidents",
            "Acknowledged",
            "MTTA",
            "Resolved",
            "MTTR",
            "SLA met",
            "Breached",
            "Pending",
            "Compliance",
        ],
        [24, 24, 31, 26, 24, 26, 22, 22, 22, 28],
        [
            [
                f.label,
                str(f.count),
                str(f.acknowledged),
                duration_text(f.mtta),
                str(f.resolved),
                duration_text(f.mttr),
                str(f.met),
                str(f.breached),
                str(f.pending),
                reports.percent(f.compliance),
            ]
            for f in report.figures
        ],
        size=9,
    )
    _charts(pdf, report)
    pdf.add_page()
    pdf.heading("Incidents")
    pdf.mono_table(
        ["#", "Sev", "Category", "Title", "Status", "Declared", "Acknowledged", "Investigating",
         "Mitigated", "Resolved", "Closed", "TTA", "TTR", "SLA"],
        [6, 3, 14, 38, 13, 11, 12, 13, 11, 11, 11, 8, 8, 8],
        [
            [str(r.pk), r.severity, _label(Category, r.category), r.title, _label(Status, r.status),
             _short(r.declared_at), _short(r.acknowledged_at), _short(r.investigating_at),
             _short(r.mitigated_at), _short(r.resolved_at), _short(r.closed_at),
             duration_text(reports.tta(r)), duration_text(reports.ttr(r)),
             reports.sla_state(r, report.now)]
            for r in report.rows
        ],
    )  # fmt: skip
    pdf.heading("Open action items")
    pdf.mono_table(
        ["Incident", "Item", "Owner", "Due Date", "Status"],
        [9, 110, 20, 10, 12],
        [
            [f"#{i.incident_id}", " ".join(i.text.split()), owner_handle(i),
             f"{i.due_date:%Y-%m-%d}" if i.due_date else "—", i.get_status_display()]
            for i in report.open_items
        ]
        or [["", "No open action items.", "", "", ""]],
    )  # fmt: skip
    return bytes(pdf.output())


def _charts(pdf: ReportPDF, report: PeriodReport) -> None:
    """Three small charts side by side, drawn with the PDF's own lines and boxes. Each
    has its title on the first line, its legend (if any) on the second, and its plot
    below both: nothing is drawn over anything else."""
    if pdf.will_page_break(80):
        pdf.add_page()
    pdf.heading("Charts")
    top = pdf.get_y()
    _bar_chart(pdf, 15, top, 85, 60, report.weekly)
    _line_chart(pdf, 108, top, 85, 60, report.mttr_trend)
    _sla_chart(pdf, 201, top, 80, 60, report.figures)
    pdf.set_y(top + 70)


# Rows of a chart, from its top: the title, the legend, then the plot.
TITLE_H, LEGEND_H, PLOT_TOP = 4.5, 4.0, 11.0


def _frame(pdf: ReportPDF, x: float, y: float, w: float, h: float, title: str) -> float:
    """The chart's title and axes; returns the plot's top edge."""
    pdf.set_font("DejaVu", "B", 8)
    pdf.set_xy(x, y)
    pdf.cell(w, TITLE_H, title)
    pdf.set_draw_color(160, 160, 160)
    pdf.line(x, y + h, x + w, y + h)
    pdf.line(x, y + PLOT_TOP, x, y + h)
    return y + PLOT_TOP


def _legend(pdf: ReportPDF, x: float, y: float, keys: tuple[str, ...]) -> None:
    """Swatch and key for each series, on the row under the title."""
    pdf.set_font("DejaVu", "", 7)
    left = x
    for key in keys:
        pdf.set_fill_color(*SEVERITY_RGB[key])
        pdf.rect(left, y + TITLE_H + 0.8, 2.5, 2.5, style="F")
        pdf.set_xy(left + 3, y + TITLE_H)
        width = pdf.get_string_width(key) + 2
        pdf.cell(width, LEGEND_H, key)
        left += 3 + width + 2


def _bar_chart(
    pdf: ReportPDF,
    x: float,
    y: float,
    w: float,
    h: float,
    weekly: list[tuple[date, dict[str, int]]],
) -> None:
    plot_top = _frame(pdf, x, y, w, h, "Incidents per week by severity")
    _legend(pdf, x, y, reports.SEVERITY_KEYS)
    peak = max((sum(c.values()) for _, c in weekly), default=0) or 1
    step = w / max(len(weekly), 1)
    usable = y + h - plot_top - 1
    for index, (_, counts) in enumerate(weekly):
        bottom = y + h
        for key in reports.SEVERITY_KEYS:
            n = counts.get(key, 0)
            if not n:
                continue
            bar = usable * n / peak
            pdf.set_fill_color(*SEVERITY_RGB[key])
            pdf.rect(x + index * step + step * 0.1, bottom - bar, step * 0.8, bar, style="F")
            bottom -= bar
    pdf.set_font("DejaVu", "", 6)
    pdf.set_xy(x, y + h + 1)
    pdf.cell(
        w, 3, f"{weekly[0][0]:%Y-%m-%d} … {weekly[-1][0]:%Y-%m-%d}; max {peak}" if weekly else ""
    )


def _line_chart(
    pdf: ReportPDF,
    x: float,
    y: float,
    w: float,
    h: float,
    trend: list[tuple[date, timedelta | None]],
) -> None:
    plot_top = _frame(pdf, x, y, w, h, "MTTR trend (hours, by week declared)")
    points = [(i, d.total_seconds() / 3600) for i, (_, d) in enumerate(trend) if d is not None]
    peak = max((v for _, v in points), default=0) or 1
    step = w / max(len(trend) - 1, 1)
    usable = y + h - plot_top - 1
    pdf.set_draw_color(36, 86, 214)
    pdf.set_line_width(0.5)
    coords = [(x + i * step, y + h - usable * v / peak) for i, v in points]
    for (x1, y1), (x2, y2) in pairwise(coords):
        pdf.line(x1, y1, x2, y2)
    pdf.set_fill_color(36, 86, 214)
    for cx, cy in coords:
        pdf.circle(cx, cy, 0.7, style="F")
    pdf.set_line_width(0.2)
    pdf.set_font("DejaVu", "", 6)
    pdf.set_xy(x, y + h + 1)
    pdf.cell(w, 3, f"max {peak:.1f} h" if points else "nothing resolved")


def _sla_chart(
    pdf: ReportPDF, x: float, y: float, w: float, h: float, figures: list[reports.Figures]
) -> None:
    plot_top = _frame(pdf, x, y, w, h, "SLA compliance by severity")
    step = w / max(len(figures), 1)
    usable = y + h - plot_top - 1
    pdf.set_font("DejaVu", "", 6)
    for index, f in enumerate(figures):
        value = f.compliance
        bar = usable * (value or 0)
        rgb = SEVERITY_RGB.get(f.label, (29, 127, 69))
        pdf.set_fill_color(*rgb)
        if bar:
            pdf.rect(x + index * step + step * 0.15, y + h - bar, step * 0.7, bar, style="F")
        # The key and the figure on two lines under the bar, each centred in its slot.
        pdf.set_xy(x + index * step, y + h + 1)
        pdf.cell(step, 3, f.label, align="C")
        pdf.set_xy(x + index * step, y + h + 4)
        pdf.cell(step, 3, reports.percent(value), align="C")
