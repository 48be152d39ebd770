"""The one rule of when a signed-in session ends: SESSION_MAX_AGE after sign-in
whatever happens, or SESSION_IDLE_TIMEOUT after the person's last request. The
middleware (lotoops/middleware.py) logs such a session out at its next request; the
live streams' periodic re-check (incidents/views/stream.py) ends its open streams."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

# Epoch seconds, in the session's data: when the person signed in, and when they
# last made a request of their own (live streams and polls do not count).
STARTED, SEEN = "lotoops_started", "lotoops_seen"
# Recording every request would write the session on every click: once a minute is
# enough for a timeout counted in hours (the idle limit is met to within this).
SEEN_EVERY = 60.0


def expired(data: Mapping[str, Any], now: float, *, max_age: float, idle: float) -> bool:
    """Whether a session with these data must end (one without the marks yet is not:
    its next request stamps them)."""
    started, seen = data.get(STARTED), data.get(SEEN)
    if not isinstance(started, int | float) or not isinstance(seen, int | float):
        return False
    return now - started >= max_age or now - seen >= idle


def stamp_sign_in(data: MutableMapping[str, Any], now: float) -> None:
    """Marks a session at sign-in (its clocks start there), so the first request
    after it need not write the session."""
    data[STARTED] = now
    data[SEEN] = now
