"""Who is on call: handoffs at a local wall-clock time, across daylight-saving changes,
with overrides for swaps. Pure: no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from incidents.rules.rota import OverrideSpec, RotationSpec, handoff_at, now_and_next, on_call_at

A, B, C = 1, 2, 3


def weekly(tz: str, start: date = date(2026, 2, 23), at: time = time(9)) -> RotationSpec:
    return RotationSpec(tz, start, at, 7, (A, B))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_weekly_rota_hands_over_at_the_local_time_of_its_zone():
    spec = weekly("America/Santo_Domingo")  # AST, UTC-4 all year
    assert on_call_at(spec, (), utc(2026, 2, 23, 13, 0)).member == A
    assert on_call_at(spec, (), utc(2026, 3, 2, 12, 59)).member == A
    assert on_call_at(spec, (), utc(2026, 3, 2, 13, 0)).member == B
    assert on_call_at(spec, (), utc(2026, 3, 9, 13, 0)).member == A  # and round again


def test_a_dst_change_moves_the_utc_instant_of_the_handoff_in_new_york_only():
    new_york, santo_domingo = weekly("America/New_York"), weekly("America/Santo_Domingo")
    # New York springs forward on Sunday 2026-03-08: 09:00 EST is 14:00 UTC, 09:00 EDT 13:00 UTC.
    assert handoff_at(new_york, 1) == utc(2026, 3, 2, 14, 0)
    assert handoff_at(new_york, 2) == utc(2026, 3, 9, 13, 0)
    assert handoff_at(santo_domingo, 1) == utc(2026, 3, 2, 13, 0)
    assert handoff_at(santo_domingo, 2) == utc(2026, 3, 9, 13, 0)
    # The same instant, two answers: Santo Domingo has handed over, New York not yet.
    at = utc(2026, 3, 2, 13, 30)
    assert on_call_at(santo_domingo, (), at).member == B
    assert on_call_at(new_york, (), at).member == A
    # The New York shift across the change is an hour short.
    shift = on_call_at(new_york, (), utc(2026, 3, 5, 12, 0))
    assert (shift.member, shift.ends_at - shift.starts_at) == (B, timedelta(hours=167))


def test_madrid_daily_shifts_are_23_hours_in_spring_and_25_in_autumn():
    spec = RotationSpec("Europe/Madrid", date(2026, 3, 1), time(8), 1, (A, B, C))
    spring = on_call_at(spec, (), utc(2026, 3, 28, 12, 0))
    assert (spring.starts_at, spring.ends_at) == (utc(2026, 3, 28, 7, 0), utc(2026, 3, 29, 6, 0))
    autumn = on_call_at(spec, (), utc(2026, 10, 24, 12, 0))
    assert autumn.ends_at - autumn.starts_at == timedelta(hours=25)
    assert autumn.ends_at == utc(2026, 10, 25, 7, 0)  # 08:00 CET


def test_a_handoff_at_a_local_time_that_does_not_exist_happens_an_hour_later_on_the_clock():
    spec = RotationSpec("America/New_York", date(2026, 3, 7), time(2, 30), 1, (A, B))
    # 02:30 on 2026-03-08 does not exist in New York: the handoff is at 03:30 EDT.
    assert handoff_at(spec, 1) == utc(2026, 3, 8, 7, 30)


def test_nobody_is_on_call_before_the_rota_starts_and_the_first_shift_is_next():
    spec = weekly("America/Santo_Domingo")
    now, following = now_and_next(spec, (), utc(2026, 2, 20, 0, 0))
    assert now is None
    assert (following.member, following.starts_at) == (A, utc(2026, 2, 23, 13, 0))


def test_an_empty_rota_has_nobody():
    spec = RotationSpec("Europe/Madrid", date(2026, 1, 1), time(9), 7, ())
    assert on_call_at(spec, (), utc(2026, 3, 1)) is None
    assert now_and_next(spec, (), utc(2026, 3, 1)) == (None, None)


def test_an_override_wins_for_its_window_and_cuts_the_rota_shift_short():
    spec = weekly("America/Santo_Domingo")
    swap = OverrideSpec(C, utc(2026, 3, 4, 18, 0), utc(2026, 3, 5, 6, 0))
    before = on_call_at(spec, (swap,), utc(2026, 3, 4, 12, 0))
    assert (before.member, before.ends_at) == (B, swap.starts_at)
    during = on_call_at(spec, (swap,), utc(2026, 3, 4, 23, 0))
    assert (during.member, during.override, during.ends_at) == (C, True, swap.ends_at)
    assert on_call_at(spec, (swap,), swap.ends_at).member == B
    now, following = now_and_next(spec, (swap,), utc(2026, 3, 4, 12, 0))
    assert (now.member, following.member) == (B, C)


def test_of_overlapping_overrides_the_last_one_made_wins():
    spec = weekly("Europe/Madrid")
    first = OverrideSpec(B, utc(2026, 3, 4, 0, 0), utc(2026, 3, 6, 0, 0))
    second = OverrideSpec(C, utc(2026, 3, 5, 0, 0), utc(2026, 3, 5, 12, 0))
    assert on_call_at(spec, (first, second), utc(2026, 3, 5, 6, 0)).member == C
    assert on_call_at(spec, (first, second), utc(2026, 3, 4, 6, 0)).member == B


def test_now_and_next_on_the_dashboard_after_an_override_skips_the_same_person():
    spec = weekly("Europe/Madrid")  # B from 2026-03-02 08:00 UTC
    swap = OverrideSpec(B, utc(2026, 3, 1, 0, 0), utc(2026, 3, 2, 12, 0))
    now, following = now_and_next(spec, (swap,), utc(2026, 3, 1, 6, 0))
    assert now.member == B and now.override
    assert following.member == A  # not B continuing on the rota
