"""Signed, expiring acknowledge links carried by every page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing

from ..models import (
    EventKind,
    Incident,
    Notification,
)
from ..timeline import actor_name, append_event

ACK_SALT = "incidents.ack-link"


def ack_token(notification: Notification) -> str:
    return signing.dumps({"i": notification.incident_id, "n": notification.pk}, salt=ACK_SALT)


def read_ack_token(token: str) -> tuple[int, int]:
    """(incident id, notification id); raises signing.SignatureExpired or BadSignature."""
    data = signing.loads(token, salt=ACK_SALT, max_age=settings.ACK_LINK_MAX_AGE)
    return int(data["i"]), int(data["n"])


def token_incident(token: str) -> int | None:
    """The incident an expired (but genuine) token names; None for a forged one."""
    try:
        data = signing.loads(token, salt=ACK_SALT)
    except signing.BadSignature:
        return None
    return int(data["i"])


def record_expired_link(incident_id: int, user: AbstractBaseUser) -> None:
    """Someone used a genuine but expired acknowledge link: say so, change nothing."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return
    who = actor_name(user) if user.is_authenticated else "Someone"
    append_event(
        incident,
        EventKind.NOTIFICATION,
        f"{who} used an expired acknowledge link: nothing changed",
        data={"ack_link": "expired"},
    )
