"""Who is on call: the rota's pure rules applied to the rotations in the database."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from ..models import (
    EscalationContact,
    EscalationRole,
    Rotation,
    RotationMember,
)
from ..rules import rota
from . import channels as notify


def rotation_spec(rotation: Rotation) -> tuple[rota.RotationSpec, tuple[rota.OverrideSpec, ...]]:
    members = tuple(m.pk for m in rotation.members.all())
    spec = rota.RotationSpec(
        rotation.time_zone, rotation.start_date, rotation.handoff_time, rotation.shift_days, members
    )
    overrides = tuple(
        rota.OverrideSpec(o.member_id, o.starts_at, o.ends_at)
        for o in rotation.overrides.order_by("pk")
    )
    return spec, overrides


def on_call(
    role: str = EscalationRole.ON_CALL, at: datetime | None = None
) -> tuple[RotationMember | None, RotationMember | None, rota.Shift | None, rota.Shift | None]:
    """Who holds `role` now and next (from the first active rotation of that role)."""
    at = at or timezone.now()
    rotation = Rotation.objects.filter(active=True, role=role).prefetch_related("members").first()
    if rotation is None:
        return None, None, None, None
    return on_call_in(rotation, at)


def on_call_in(
    rotation: Rotation, at: datetime
) -> tuple[RotationMember | None, RotationMember | None, rota.Shift | None, rota.Shift | None]:
    """Who is on call in this rotation at `at`, and who is next."""
    spec, overrides = rotation_spec(rotation)
    now_shift, next_shift = rota.now_and_next(spec, overrides, at)
    members = {m.pk: m for m in rotation.members.all()}
    return (
        members.get(now_shift.member) if now_shift else None,
        members.get(next_shift.member) if next_shift else None,
        now_shift,
        next_shift,
    )


def user_for(contact: EscalationContact, at: datetime) -> AbstractBaseUser | None:
    """The LotoOps user behind a contact at `at` (as `person_for` picks the person)."""
    member = on_call(contact.role, at)[0]
    if member is not None:
        return member.user
    return contact.user


def person_for(contact: EscalationContact, at: datetime) -> notify.Person:
    """The person behind a contact: whoever the rota puts on call for its role, else
    the contact's own details (the user's email when the contact has none)."""
    member = on_call(contact.role, at)[0]
    if member is not None:
        email = member.email or (member.user.email if member.user else "")
        return notify.Person(member.name, email, member.slack_handle, member.phone)
    email = contact.email or (contact.user.email if contact.user else "")
    return notify.Person(contact.name, email, contact.slack_handle, contact.phone)
