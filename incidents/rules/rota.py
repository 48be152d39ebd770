"""Who is on call at a given instant: pure, zoneinfo-based, no database.

A rotation hands over at a local wall-clock time in its own time zone (09:00 in
Santo Domingo stays 09:00 there all year), so a daylight-saving change in that
zone moves the UTC instant of the handoff, and a shift across the change is an
hour shorter or longer. A local time that does not exist on the day of a
spring-forward change (02:30) resolves, as zoneinfo does, to the instant one
hour later on the wall clock; an ambiguous one (autumn) to its first occurrence.

Overrides (swaps) win over the rota for their window; of overlapping overrides
the one created last wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class RotationSpec:
    time_zone: str
    start_date: date
    handoff_time: time
    shift_days: int
    members: tuple[int, ...]  # member ids, in turn order


@dataclass(frozen=True)
class OverrideSpec:
    member: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Shift:
    member: int
    starts_at: datetime  # UTC
    ends_at: datetime  # UTC
    override: bool = False


def handoff_at(spec: RotationSpec, n: int) -> datetime:
    """The UTC instant of the n-th handoff (n = 0 is the first, on start_date)."""
    local_day = spec.start_date + timedelta(days=n * spec.shift_days)
    local = datetime.combine(local_day, spec.handoff_time, tzinfo=ZoneInfo(spec.time_zone))
    # Round-tripping normalises a non-existent local time (spring forward).
    return local.astimezone(UTC)


def _turn(spec: RotationSpec, at: datetime) -> int:
    """The number of the shift that contains `at` (negative before the first handoff)."""
    local_day = at.astimezone(ZoneInfo(spec.time_zone)).date()
    n = (local_day - spec.start_date).days // spec.shift_days
    while handoff_at(spec, n) > at:
        n -= 1
    while handoff_at(spec, n + 1) <= at:
        n += 1
    return n


def rota_shift(spec: RotationSpec, at: datetime) -> Shift | None:
    """The rota's own shift at `at` (ignoring overrides); None before it starts or empty."""
    if not spec.members or spec.shift_days < 1:
        return None
    n = _turn(spec, at)
    if n < 0:
        return None
    member = spec.members[n % len(spec.members)]
    return Shift(member, handoff_at(spec, n), handoff_at(spec, n + 1))


def on_call_at(
    spec: RotationSpec, overrides: tuple[OverrideSpec, ...], at: datetime
) -> Shift | None:
    """Who is on call at `at`, and from when until when that stays true."""
    active = [o for o in overrides if o.starts_at <= at < o.ends_at]
    if active:
        winner = active[-1]
        return Shift(winner.member, winner.starts_at, winner.ends_at, override=True)
    shift = rota_shift(spec, at)
    if shift is None:
        later = [o.starts_at for o in overrides if o.starts_at > at]
        first = handoff_at(spec, 0) if spec.members and spec.shift_days >= 1 else None
        if first is not None and first > at:
            later.append(first)
        if not later:
            return None
        return on_call_at(spec, overrides, min(later))
    # An override starting during this shift cuts it short.
    starts = [o.starts_at for o in overrides if shift.starts_at < o.starts_at < shift.ends_at]
    starts = [s for s in starts if s > at]
    if starts:
        return Shift(shift.member, shift.starts_at, min(starts))
    return shift


def now_and_next(
    spec: RotationSpec, overrides: tuple[OverrideSpec, ...], at: datetime
) -> tuple[Shift | None, Shift | None]:
    """The shift at `at` and the one after it (for the dashboard)."""
    current = on_call_at(spec, overrides, at)
    if current is None:
        return None, None
    if current.starts_at > at:  # nobody yet: `current` is the first one to come
        return None, current
    following = on_call_at(spec, overrides, current.ends_at)
    # Skip a "next" that is the same person continuing (an override ending on its own rota shift).
    if following is not None and following.member == current.member:
        after = on_call_at(spec, overrides, following.ends_at)
        following = after if after is not None else following
    return current, following
