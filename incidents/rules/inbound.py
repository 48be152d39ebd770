"""What LotoOps accepts from outside, written once: the pages' forms, the API, the
Alertmanager and Stripe receivers all import these limits and checks (pure, no I/O).

A payload that breaks one of them is refused whole (400 on the webhooks and the
pages' forms, 422 on the API's schema) and nothing is written: PostgreSQL cannot
store a NUL character or a lone surrogate, a column has its length and its integer
range, and a time outside the window below would be stored but could not be read
back in every time zone (a page showing it would fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

# Text lengths: the columns' max_length, and one cap for free text.
MAX_TITLE = 200  # Incident.title
MAX_SUMMARY = 10_000  # an incident's summary
MAX_TEXT = 10_000  # a note, a status update
MAX_REASON = 1_000  # a transition's note, a reason, an override's reason
MAX_SERVICE = 100  # one impacted service's name
MAX_SERVICES = 50  # impacted services on one incident
MAX_ACTION_ITEM = 300  # ActionItem.text
MAX_USERNAME = 150  # Django's username column

# PostgreSQL's integer and bigint.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# Times from outside: from 2000 to a year from now (UTC). Alertmanager's "no end time"
# (year 1) is read as no time, before this check.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=366)


class Unstorable(ValueError):
    """A value LotoOps refuses to store (the message says which and why)."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    if "\x00" in value:
        return "text may not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (no lone surrogates)"
    return None


def check_text(value: str) -> str:
    """`value`, or Unstorable (for a pydantic AfterValidator or a form's clean)."""
    problem = text_problem(value)
    if problem:
        raise Unstorable(problem)
    return value


def _walk(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield f"{name} (the key)", key
            yield from _walk(item, name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def find_unstorable(value: object) -> str | None:
    """Where, in decoded JSON (keys included), the first text that cannot be stored
    is and why, or None."""
    for path, text in _walk(value, ""):
        problem = text_problem(text)
        if problem:
            shown = path.encode("unicode_escape").decode("ascii")[:120]
            return f"{shown or 'body'}: {problem}"
    return None


def latest(now: datetime) -> datetime:
    return now + AHEAD


def window_text(now: datetime) -> str:
    return f"between {EARLIEST:%Y-%m-%d} and {latest(now):%Y-%m-%d} (UTC)"


def check_instant(value: datetime, now: datetime) -> datetime:
    """`value` in UTC, if it carries a time zone and lies inside the window."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise Unstorable("times must carry a time zone (RFC 3339)")
    if not EARLIEST <= value <= latest(now):
        raise Unstorable(f"the time must lie {window_text(now)}")
    return value.astimezone(UTC)
