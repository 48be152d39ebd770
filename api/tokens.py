"""API tokens: made once, stored as a SHA-256, looked up by that hash."""

from __future__ import annotations

import hmac

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from incidents.rules import tokens

from .models import ApiToken


def issue(user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    token, digest, prefix = tokens.new("lta")
    row = ApiToken.objects.create(user=user, name=name, token_hash=digest, prefix=prefix)
    return row, token


def user_for(token: str) -> AbstractBaseUser | None:
    """The active user an unrevoked token belongs to. The lookup is by the hash of the
    whole token (an index cannot be walked towards a secret it never sees), and the
    match is confirmed with compare_digest."""
    digest = tokens.digest(token)
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=digest, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = timezone.now()
    if tokens.touch_due(row.last_used_at, now):
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user
