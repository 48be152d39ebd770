"""Server-side SVG charts for the reports page: hand-built, no JavaScript, no CDN.

Presentation attributes only (no `style`), so the page's strict CSP allows them."""

from __future__ import annotations

from datetime import date, timedelta

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import figures as reports

COLORS = {"P0": "#b3121b", "P1": "#d9480f", "P2": "#b08800", "P3": "#5c6b80"}
W, H, PAD_L, PAD_B, PAD_T = 420, 200, 34, 24, 22


def _svg(title: str, body: list[str]) -> SafeString:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" '
        f'class="chart" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text x="4" y="14" font-size="12" font-weight="bold" fill="#1c2230">'
        f"{escape(title)}</text>"
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - 4}" y2="{H - PAD_B}" stroke="#999"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#999"/>'
    )
    return mark_safe(head + "".join(body) + "</svg>")  # noqa: S308  every text escaped


def _axis(peak: float, unit: str = "") -> list[str]:
    return [
        f'<text x="{PAD_L - 3}" y="{PAD_T + 4}" font-size="9" text-anchor="end" fill="#5d6677">'
        f"{peak:g}{unit}</text>",
        f'<text x="{PAD_L - 3}" y="{H - PAD_B}" font-size="9" text-anchor="end" '
        f'fill="#5d6677">0</text>',
    ]


def _x_labels(weeks: list[date], step: float) -> list[str]:
    every = max(1, len(weeks) // 6)
    return [
        f'<text x="{PAD_L + i * step + step / 2:.1f}" y="{H - 8}" font-size="9" '
        f'text-anchor="middle" fill="#5d6677">{w:%m-%d}</text>'
        for i, w in enumerate(weeks)
        if i % every == 0
    ]


def weekly_bars(weekly: list[tuple[date, dict[str, int]]]) -> SafeString:
    """Stacked bars: incidents declared per week, by severity."""
    peak = max((sum(c.values()) for _, c in weekly), default=0) or 1
    step = (W - PAD_L - 8) / max(len(weekly), 1)
    usable = H - PAD_B - PAD_T
    body = _axis(peak)
    for i, (week, counts) in enumerate(weekly):
        bottom = H - PAD_B
        for key in reports.SEVERITY_KEYS:
            n = counts.get(key, 0)
            if not n:
                continue
            bar = usable * n / peak
            body.append(
                f'<rect x="{PAD_L + i * step + step * 0.1:.1f}" y="{bottom - bar:.1f}" '
                f'width="{step * 0.8:.1f}" height="{bar:.1f}" fill="{COLORS[key]}">'
                f"<title>week of {week:%Y-%m-%d}: {n} {key}</title></rect>"
            )
            bottom -= bar
    body += _x_labels([w for w, _ in weekly], step)
    for j, key in enumerate(reports.SEVERITY_KEYS):
        body.append(
            f'<rect x="{W - 150 + j * 36}" y="5" width="9" height="9" fill="{COLORS[key]}"/>'
            f'<text x="{W - 138 + j * 36}" y="13" font-size="10" fill="#1c2230">{key}</text>'
        )
    return _svg("Incidents per week by severity", body)


def mttr_line(trend: list[tuple[date, timedelta | None]]) -> SafeString:
    """MTTR (hours) of the incidents declared each week; weeks without one are gaps."""
    points = [(i, d.total_seconds() / 3600) for i, (_, d) in enumerate(trend) if d is not None]
    peak = round(max((v for _, v in points), default=0), 1) or 1
    step = (W - PAD_L - 8) / max(len(trend), 1)
    usable = H - PAD_B - PAD_T
    coords = [(PAD_L + i * step + step / 2, H - PAD_B - usable * v / peak) for i, v in points]
    body = _axis(peak, " h")
    if coords:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        body.append(f'<polyline points="{path}" fill="none" stroke="#2456d6" stroke-width="2"/>')
    for (x, y), (i, v) in zip(coords, points, strict=True):
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#2456d6">'
            f"<title>week of {trend[i][0]:%Y-%m-%d}: {v:.2f} h</title></circle>"
        )
    body += _x_labels([w for w, _ in trend], step)
    return _svg("MTTR trend (hours)", body)


def sla_bars(figures: list[reports.Figures]) -> SafeString:
    """SLA compliance per severity (and overall), in percent."""
    step = (W - PAD_L - 8) / max(len(figures), 1)
    usable = H - PAD_B - PAD_T
    body = _axis(100, "%")
    for i, f in enumerate(figures):
        value = f.compliance
        bar = usable * (value or 0)
        x = PAD_L + i * step + step * 0.15
        body.append(
            f'<rect x="{x:.1f}" y="{H - PAD_B - bar:.1f}" width="{step * 0.7:.1f}" '
            f'height="{bar:.1f}" fill="{COLORS.get(f.label, "#1d7f45")}">'
            f"<title>{escape(f.label)}: {reports.percent(value)} ({f.met} met, "
            f"{f.breached} breached)</title></rect>"
            f'<text x="{x + step * 0.35:.1f}" y="{H - 8}" font-size="9" text-anchor="middle" '
            f'fill="#5d6677">{escape(f.label)} {reports.percent(value)}</text>'
        )
    return _svg("SLA compliance by severity", body)
