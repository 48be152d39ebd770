"""API tokens: made once, stored as a SHA-256, looked up by that hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken


def _touch(model: type[ApiToken], pk: int, last: datetime | None) -> None:
    """Record the token's use, at most once a minute (a write per request would cost
    a commit per alert)."""
    now = timezone.now()
    if last is None or now - last > timedelta(minutes=1):
        model.objects.filter(pk=pk).update(last_used_at=now)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    token = "lta_" + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user, name=name, token_hash=_digest(token), prefix=token[:10]
    )
    return row, token


def user_for(token: str) -> AbstractBaseUser | None:
    """The active user an unrevoked token belongs to. The lookup is by the hash of the
    whole token (an index cannot be walked towards a secret it never sees), and the
    match is confirmed with compare_digest."""
    digest = _digest(token)
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=digest, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    _touch(ApiToken, row.pk, row.last_used_at)
    return row.user
