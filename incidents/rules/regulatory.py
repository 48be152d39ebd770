"""Regulatory clocks: a data breach or a regulatory issue obliges someone to notify
an authority within a deadline (e.g. 72 h). When each escalation of such a clock
is due, as a pure function of the clock and a time, like rules/escalation.py for
the SLA. No database, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

PENDING, OVERDUE, MET, LATE, STOPPED = "pending", "overdue", "met", "late", "stopped"


@dataclass(frozen=True)
class Clock:
    flag: str
    started_at: datetime
    deadline: datetime
    warn_before: timedelta
    done_at: datetime | None = None
    stopped_at: datetime | None = None


def verdict(clock: Clock, now: datetime) -> str:
    """met / late once the notification is recorded; stopped when the flag was
    cleared; otherwise overdue past the deadline, pending before it."""
    if clock.done_at is not None:
        return MET if clock.done_at <= clock.deadline else LATE
    if clock.stopped_at is not None:
        return STOPPED
    return OVERDUE if now > clock.deadline else PENDING


def seconds_left(clock: Clock, now: datetime) -> int:
    return int((clock.deadline - now).total_seconds())


def steps_due(clock: Clock, now: datetime, *, interval: timedelta, max_steps: int) -> list[str]:
    """The escalation steps due by `now`, oldest first: `warn` once the deadline is
    `warn_before` away, `due` at the deadline, then `overdue-<n>` every `interval`
    after it, at most `max_steps` of those. None once done or stopped."""
    if clock.done_at is not None or clock.stopped_at is not None:
        return []
    steps: list[str] = []
    if clock.warn_before and now >= clock.deadline - clock.warn_before:
        steps.append("warn")
    if now >= clock.deadline:
        steps.append("due")
        late = int((now - clock.deadline) / interval)
        steps += [f"overdue-{n}" for n in range(1, min(late, max_steps) + 1)]
    return steps


def why(step: str, obligation: str, deadline_text: str) -> str:
    """The reason a person reads for one step."""
    if step == "warn":
        return f"{obligation}: deadline {deadline_text} is near"
    if step == "due":
        return f"{obligation}: deadline {deadline_text} reached, not recorded as done"
    return f"{obligation}: overdue since {deadline_text} ({step.replace('-', ' ')})"
