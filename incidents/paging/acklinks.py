"""Signed, expiring acknowledge links carried by every page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction

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


def expired_token_ids(token: str) -> tuple[int, int] | None:
    """(incident id, notification id) of an expired but genuine token; None if forged."""
    try:
        data = signing.loads(token, salt=ACK_SALT)
        return int(data["i"]), int(data["n"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None


def record_expired_link(
    incident_id: int, user: AbstractBaseUser, *, notification_id: int | None = None
) -> None:
    """Someone used a genuine but expired acknowledge link: say so, change nothing.
    Once per person and link: opening it again adds nothing. The caller checks the
    person may see the incident (others leave no trace on its timeline)."""
    who = actor_name(user) if user.is_authenticated else "Someone"
    user_id = user.pk if user.is_authenticated else None
    with transaction.atomic():
        incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
        if incident is None:
            return
        data = {"ack_link": "expired", "notification": notification_id, "user": user_id}
        earlier = incident.timeline.filter(
            kind=EventKind.NOTIFICATION,
            data__ack_link="expired",
            data__notification=notification_id,
            data__user=user_id,
        )
        if earlier.exists():
            return
        append_event(
            incident,
            EventKind.NOTIFICATION,
            f"{who} used an expired acknowledge link: nothing changed",
            data=data,
        )
