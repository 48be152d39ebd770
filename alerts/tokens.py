"""Bearer tokens for webhook senders: made once, stored as a SHA-256, checked in
constant time."""

from __future__ import annotations

import hmac

from django.utils import timezone

from incidents.rules import tokens

from .models import IngestToken, Source


def issue(name: str, source: str = Source.ALERTMANAGER) -> tuple[IngestToken, str]:
    """A new token row and the token itself (shown once, never stored)."""
    token, digest, prefix = tokens.new("lto")
    row = IngestToken.objects.create(name=name, source=source, token_hash=digest, prefix=prefix)
    return row, token


def authenticate(header: str, source: str) -> IngestToken | None:
    """The active token `Authorization: Bearer <token>` names, else None. Looked up
    by the hash of the whole token (an index cannot be walked towards a secret it
    never sees), the match confirmed with compare_digest."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = tokens.digest(token.strip())
    row = IngestToken.objects.filter(
        token_hash=digest, source=source, revoked_at__isnull=True
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = timezone.now()
    if tokens.touch_due(row.last_used_at, now):
        IngestToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
