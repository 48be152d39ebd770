"""Bearer tokens for webhook senders: made once, stored as a SHA-256, checked in
constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.utils import timezone

from .models import IngestToken, Source


def _touch(model: type[IngestToken], pk: int, last: datetime | None) -> None:
    """Record the token's use, at most once a minute (a write per request would cost
    a commit per alert)."""
    now = timezone.now()
    if last is None or now - last > timedelta(minutes=1):
        model.objects.filter(pk=pk).update(last_used_at=now)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(name: str, source: str = Source.ALERTMANAGER) -> tuple[IngestToken, str]:
    """A new token row and the token itself (shown once, never stored)."""
    token = "lto_" + secrets.token_urlsafe(32)
    row = IngestToken.objects.create(
        name=name, source=source, token_hash=_digest(token), prefix=token[:10]
    )
    return row, token


def authenticate(header: str, source: str) -> IngestToken | None:
    """The active token `Authorization: Bearer <token>` names, else None. Every
    active token's hash is compared with hmac.compare_digest, so the time taken
    says nothing about how much of a guess was right."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = _digest(token.strip())
    found = None
    for row in IngestToken.objects.filter(source=source, revoked_at__isnull=True):
        if hmac.compare_digest(row.token_hash, digest):
            found = row
    if found is not None:
        _touch(IngestToken, found.pk, found.last_used_at)
    return found
