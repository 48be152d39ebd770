"""No test depends on today's date: a literal date still ahead of today is a test that
will start failing on that day (an action item due "2026-12-01" did, on every machine
from then on). Dates ahead must be relative (`timezone.localdate() + timedelta(...)`)
or time fixed with time-machine; the edge of the calendar (year 2900 and later, e.g.
2999-12-31) never arrives and is allowed."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PATTERNS = [
    re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"\bdate(?:time)?\(\s*(\d{4}),\s*(\d{1,2}),\s*(\d{1,2})"),
]
EDGE_OF_CALENDAR = 2900


def literal_dates(text: str) -> list[tuple[int, date]]:
    found = []
    for pattern in PATTERNS:
        for match in pattern.finditer(text):
            try:
                day = date(*(int(part) for part in match.groups()))
            except ValueError:
                continue  # not a date (or a deliberately invalid one, e.g. 2026-13-01)
            found.append((text.count("\n", 0, match.start()) + 1, day))
    return found


def test_the_scanner_finds_literal_dates():
    assert literal_dates('fill("#due", "2031-05-04")\nx = date(2030, 1, 2)') == [
        (1, date(2031, 5, 4)),
        (2, date(2030, 1, 2)),
    ]
    assert literal_dates('"2026-13-01" 12026-01-01') == []


def test_no_test_names_a_date_still_ahead_of_today():
    today = date.today()
    ahead = [
        f"{path.relative_to(TESTS.parent)}:{line}: {day}"
        for path in sorted(TESTS.rglob("*.py"))
        if "vendor" not in path.parts and path != Path(__file__).resolve()
        for line, day in literal_dates(path.read_text(encoding="utf-8"))
        if today <= day and day.year < EDGE_OF_CALENDAR
    ]
    assert not ahead, "literal dates ahead of today (make them relative):\n" + "\n".join(ahead)
