"""API tokens: made once, stored as a SHA-256, looked up by that hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken


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
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    return row.user
