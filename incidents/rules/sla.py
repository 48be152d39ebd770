"""The one SLA rule: an incident meets its SLA when it is acknowledged by its
response deadline (declared + the severity's response time). The model, the
reports, the SLA clock on the pages and the browser's countdown (which reads the
deadline and the server's verdict from the rendered attributes) all use it."""

from __future__ import annotations

from datetime import datetime

MET, BREACHED, PENDING = "met", "breached", "pending"


def verdict(acknowledged_at: datetime | None, response_deadline: datetime, now: datetime) -> str:
    """met / breached once acknowledged; while not acknowledged, breached past the
    deadline and pending before it."""
    if acknowledged_at is not None:
        return MET if acknowledged_at <= response_deadline else BREACHED
    return BREACHED if now > response_deadline else PENDING
