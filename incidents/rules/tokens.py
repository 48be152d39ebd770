"""Bearer tokens (API users, webhook senders): made once, shown once, stored as
the SHA-256 of the whole token and found by it; use recorded at most once a minute."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

TOUCH_EVERY = timedelta(minutes=1)  # a write per request would cost a commit per call


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new(kind: str) -> tuple[str, str, str]:
    """(token, its digest, the prefix shown in admin) for a new token of `kind`
    ("lta" for the API, "lto" for webhook senders)."""
    token = f"{kind}_" + secrets.token_urlsafe(32)
    return token, digest(token), token[:10]


def touch_due(last_used: datetime | None, now: datetime) -> bool:
    return last_used is None or now - last_used > TOUCH_EVERY
