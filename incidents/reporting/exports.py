"""Exports: one incident's report (Markdown in the runbook template's exact structure,
and PDF with the same facts), and the period report (CSV, PDF with charts).

PDFs are drawn with fpdf2 (pure Python, installs from PyPI alone) in DejaVu Sans,
vendored under incidents/fonts so any text prints whatever the machine has.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from django.utils import timezone
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from ..models import ActionItem, EvidenceFile, Incident, PostMortem, RegulatoryClock
from ..postincident.postmortem import TimelineLine, draft_for, included_events, timeline_lines
from ..rules import regulatory as regulatory_rule
from ..rules.text import format_duration
from ..timeline import actor_name
from . import figures as reports

FONT_DIR = Path(__file__).resolve().parent / "fonts"
# fontTools logs every font subset at INFO: one line per table of every PDF.
logging.getLogger("fontTools").setLevel(logging.WARNING)
NOT_WRITTEN = "Not written yet."
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


def incident_report(incident: Incident) -> IncidentReport:
    """The saved post-mortem, or a prefilled draft (unsaved) when none exists yet."""
    postmortem = PostMortem.objects.filter(incident=incident).first() or draft_for(incident)
    if postmortem.pk:
        events = included_events(postmortem)
    else:
        ids = set(postmortem.timeline_event_ids)
        events = [e for e in incident.timeline.order_by("id") if e.pk in ids]
    items = list(incident.action_items.select_related("owner").order_by("due_date", "pk"))
    files = list(incident.evidence_files.select_related("created_by").order_by("id"))
    clocks = list(incident.regulatory_clocks.select_related("done_by").order_by("deadline"))
    return IncidentReport(incident, postmortem, timeline_lines(events), items, files, clocks)


def clock_row(clock: RegulatoryClock, now: datetime | None = None) -> list[str]:
    """Obligation, flag, started, deadline, state (done on time / late, by whom, how)."""
    snap = regulatory_rule.Clock(
        clock.flag,
        clock.started_at,
        clock.deadline,
        clock.warn_before,
        clock.done_at,
        clock.stopped_at,
    )
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


# [text](url), ![alt](url), and a reference definition "[label]: url".
_MD_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[^)]*)?\)")
_MD_REFERENCE = re.compile(r"^(\s{0,3}\[[^\]\n]+\]:)\s*<?(\S*?)>?(\s.*)?$", re.M)
SAFE_SCHEMES = ("http://", "https://")


def _md_safe(text: str) -> str:
    """What people wrote, made harmless in any Markdown viewer: HTML shown as text
    (never a tag), and a link kept only when it goes to an http(s) address; any
    other (javascript:, data:, file:, …) keeps its text and loses its target."""
    text = html.escape(text, quote=False)

    def link(match: re.Match[str]) -> str:
        _bang, label, url = match.groups()
        return match[0] if url.lower().startswith(SAFE_SCHEMES) else label

    def reference(match: re.Match[str]) -> str:
        url = match[2]
        return match[0] if url.lower().startswith(SAFE_SCHEMES) else "\\" + match[0].lstrip()

    return _MD_REFERENCE.sub(reference, _MD_LINK.sub(link, text))


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


# --- PDF building blocks --------------------------------------------------------------------


class _PDF(FPDF):
    def __init__(self, title: str, orientation: str = "P") -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.add_font("DejaVuMono", "", str(FONT_DIR / "DejaVuSansMono.ttf"))
        self.set_title(title)
        self.set_creator("LotoOps")
        self.set_auto_page_break(True, margin=15)
        self.set_margins(15, 15, 15)
        self.footer_text = title

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("DejaVu", "", 7)
        self.set_text_color(120, 120, 120)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()}", align="R")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, size: float = 13) -> None:
        self.ln(2)
        self.set_font("DejaVu", "B", size)
        self.multi_cell(0, size * 0.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, size: float = 10) -> None:
        self.set_font("DejaVu", "", size)
        self.multi_cell(0, 5, text or NOT_WRITTEN, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def field(self, label: str, value: str) -> None:
        self.set_font("DejaVu", "B", 10)
        self.cell(24, 6, f"{label}:")
        self.set_font("DejaVu", "", 10)
        self.multi_cell(0, 6, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def table(
        self, headers: list[str], widths: list[float], rows: list[list[str]], size: float = 8
    ) -> None:
        height = size * 0.55
        self.set_font("DejaVu", "B", size)
        self.set_fill_color(236, 239, 244)
        for header, width in zip(headers, widths, strict=True):
            self.cell(width, height + 1, header, border=1, fill=True)
        self.ln()
        self.set_font("DejaVu", "", size)
        for row in rows:
            if self.will_page_break(height):
                self.add_page()
                self.set_font("DejaVu", "B", size)
                for header, width in zip(headers, widths, strict=True):
                    self.cell(width, height + 1, header, border=1, fill=True)
                self.ln()
                self.set_font("DejaVu", "", size)
            for value, width in zip(row, widths, strict=True):
                self.cell(width, height, _fit(self, value, width), border="B")
            self.ln()

    def mono_table(self, headers: list[str], widths: list[int], rows: list[list[str]]) -> None:
        """A long table as one text line per row in a monospaced font, columns padded to
        `widths` characters: a cell per row instead of one per value is what keeps a
        10,000-row table to seconds (fpdf2 spends ~0.2 ms on every cell)."""
        size, height = 6.5, 3.4

        def line(values: list[str]) -> str:
            return " ".join(_pad(v, w) for v, w in zip(values, widths, strict=True))

        header = line(headers)
        self.set_font("DejaVuMono", "", size)
        self.set_fill_color(236, 239, 244)
        self.cell(0, height, header, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        for row in rows:
            if self.will_page_break(height):
                self.add_page()
                self.set_font("DejaVuMono", "", size)
                self.cell(0, height, header, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.cell(0, height, line(row), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _pad(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """Cut a cell's text to its column (with an ellipsis), cheaply for short text."""
    room = width - 1.5
    if len(text) * 2.2 < room or pdf.get_string_width(text) <= room:
        return text
    while text and pdf.get_string_width(text + "…") > room:
        text = text[: max(0, len(text) - max(1, len(text) // 8))]
    return text + "…"


# --- one incident as PDF -------------------------------------------------------------------


def incident_pdf(report: IncidentReport) -> bytes:
    incident, pm = report.incident, report.postmortem
    title = f"Incident Report: {pm.title or incident.title}"
    pdf = _PDF(f"Incident #{incident.pk} report")
    pdf.add_page()
    pdf.heading(title, 16)
    day = report_date(incident)
    pdf.field("Date", day)
    pdf.field("Duration", report_duration(incident))
    pdf.field("Severity", incident.severity.key)
    pdf.field("Author", pm.author or "Unknown")
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
    pdf.table(
        ["Item", "Owner", "Due Date", "Status"],
        [95, 35, 25, 25],
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (=HYPERLINK(…), +cmd|…, @SUM…)
    is kept as text: prefixed with an apostrophe, as OWASP recommends. Numbers stay."""
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def period_csv(rows: list[reports.Row], now: datetime) -> str:
    """One row per incident, with a header row (reads back with csv.DictReader)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(
        {name: csv_cell(value) for name, value in csv_row(row, now).items()} for row in rows
    )
    return out.getvalue()


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
    pdf = _PDF(f"Incident report {report.start} to {report.end}", orientation="L")
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
    pdf.table(
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
        [26, 24, 26, 26, 24, 26, 22, 22, 22, 26],
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
            [str(r.pk), r.severity, r.category.replace("_", " "), r.title, r.status,
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


def _charts(pdf: _PDF, report: PeriodReport) -> None:
    """Three small charts side by side, drawn with the PDF's own lines and boxes."""
    if pdf.will_page_break(75):
        pdf.add_page()
    pdf.heading("Charts")
    top = pdf.get_y()
    _bar_chart(pdf, 15, top, 85, 60, report.weekly)
    _line_chart(pdf, 108, top, 85, 60, report.mttr_trend)
    _sla_chart(pdf, 201, top, 80, 60, report.figures)
    pdf.set_y(top + 68)


def _frame(pdf: _PDF, x: float, y: float, w: float, h: float, title: str) -> None:
    pdf.set_font("DejaVu", "B", 8)
    pdf.set_xy(x, y)
    pdf.cell(w, 4, title)
    pdf.set_draw_color(160, 160, 160)
    pdf.line(x, y + h, x + w, y + h)
    pdf.line(x, y + 6, x, y + h)


def _bar_chart(
    pdf: _PDF, x: float, y: float, w: float, h: float, weekly: list[tuple[date, dict[str, int]]]
) -> None:
    _frame(pdf, x, y, w, h, "Incidents per week by severity")
    peak = max((sum(c.values()) for _, c in weekly), default=0) or 1
    step = w / max(len(weekly), 1)
    usable = h - 8
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
    for i, key in enumerate(reports.SEVERITY_KEYS):
        pdf.set_fill_color(*SEVERITY_RGB[key])
        pdf.rect(x + w - 40 + i * 10, y + 1, 2.5, 2.5, style="F")
        pdf.set_xy(x + w - 37 + i * 10, y)
        pdf.cell(7, 4, key)


def _line_chart(
    pdf: _PDF, x: float, y: float, w: float, h: float, trend: list[tuple[date, timedelta | None]]
) -> None:
    _frame(pdf, x, y, w, h, "MTTR trend (hours, by week declared)")
    points = [(i, d.total_seconds() / 3600) for i, (_, d) in enumerate(trend) if d is not None]
    peak = max((v for _, v in points), default=0) or 1
    step = w / max(len(trend) - 1, 1)
    usable = h - 8
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
    pdf: _PDF, x: float, y: float, w: float, h: float, figures: list[reports.Figures]
) -> None:
    _frame(pdf, x, y, w, h, "SLA compliance by severity")
    step = w / max(len(figures), 1)
    usable = h - 8
    pdf.set_font("DejaVu", "", 6)
    for index, f in enumerate(figures):
        value = f.compliance
        bar = usable * (value or 0)
        rgb = SEVERITY_RGB.get(f.label, (29, 127, 69))
        pdf.set_fill_color(*rgb)
        left = x + index * step + step * 0.15
        if bar:
            pdf.rect(left, y + h - bar, step * 0.7, bar, style="F")
        pdf.set_xy(left, y + h + 1)
        pdf.cell(step * 0.7, 3, f"{f.label} {reports.percent(value)}", align="C")
