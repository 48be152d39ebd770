"""Small formatting helpers shared by services, templates and exports."""

from __future__ import annotations

from datetime import timedelta


def format_duration(delta: timedelta | float) -> str:
    """A duration the way a responder reads it: 45s, 12m 05s, 3h 20m, 2d 4h."""
    total = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    seconds = int(abs(total))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"
