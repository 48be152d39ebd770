"""Who may see and work which incident: the one helper every view uses.

Restricted incidents (security ones by default) are visible only to superusers,
holders of the global `incidents.view_restricted_incident` permission, and
users or groups granted `view_incident` on that incident (django-guardian).
Working an incident (any state change) needs `incidents.change_incident`, for
all incidents (the Responders group) or for that one.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from .live import DASHBOARD_KINDS
from .models import Incident, TimelineEvent

User = AbstractBaseUser | AnonymousUser


def visible_incidents(user: User) -> QuerySet[Incident]:
    incidents = Incident.objects.all()
    if not user.is_authenticated:
        return incidents.none()
    condition = visible_condition(user)
    return incidents if condition is None else incidents.filter(condition)


def visible_condition(user: User, prefix: str = "") -> Q | None:
    """The filter of what `user` may see, on the incident reached through `prefix`
    (e.g. "incident__" for a checklist item); None when they see everything, so
    related queries need no join at all."""
    if user.is_superuser or user.has_perm("incidents.view_restricted_incident"):
        return None
    granted = get_objects_for_user(
        user, "incidents.view_incident", klass=Incident, accept_global_perms=False
    ).values("pk")
    return Q(**{f"{prefix}restricted": False}) | Q(**{f"{prefix}pk__in": granted})


def can_view(user: User, incident: Incident) -> bool:
    if not user.is_authenticated:
        return False
    if not incident.restricted or user.is_superuser:
        return True
    return user.has_perm("incidents.view_restricted_incident") or user.has_perm(
        "incidents.view_incident", incident
    )


def can_work(user: User, incident: Incident) -> bool:
    return can_view(user, incident) and (
        user.has_perm("incidents.change_incident")
        or user.has_perm("incidents.change_incident", incident)
    )


def can_run_actions(user: User, incident: Incident) -> bool:
    """Resolution actions change the platform: they need `incidents.run_actions`,
    for all incidents or granted on this one."""
    return can_work(user, incident) and (
        user.has_perm("incidents.run_actions") or user.has_perm("incidents.run_actions", incident)
    )


def can_override_recovery(user: User, incident: Incident) -> bool:
    """Resolving without verified recovery (with a reason) is an incident commander's
    call: `incidents.override_recovery`, for all incidents or granted on this one."""
    return can_work(user, incident) and (
        user.has_perm("incidents.override_recovery")
        or user.has_perm("incidents.override_recovery", incident)
    )


def can_download_evidence(user: User, incident: Incident) -> bool:
    """Evidence files hold database dumps and logs: taking a copy needs
    `incidents.download_evidence`, for all incidents or granted on this one."""
    return can_view(user, incident) and (
        user.has_perm("incidents.download_evidence")
        or user.has_perm("incidents.download_evidence", incident)
    )


def can_verify_evidence(user: User, incident: Incident) -> bool:
    """Verifying recomputes the hashes and writes the outcome on the timeline:
    `incidents.verify_evidence`, for all incidents or granted on this one."""
    return can_view(user, incident) and (
        user.has_perm("incidents.verify_evidence")
        or user.has_perm("incidents.verify_evidence", incident)
    )


def get_incident_for(user: User, pk: int, *, work: bool = False) -> Incident:
    """The incident if `user` may see it (404 otherwise, so its existence stays hidden);
    with `work=True` also require the right to change it (403)."""
    try:
        incident = Incident.objects.select_related("severity", "commander", "declared_by").get(
            pk=pk
        )
    except Incident.DoesNotExist:
        raise Http404("No such incident") from None
    if not can_view(user, incident):
        raise Http404("No such incident")
    if work and not can_work(user, incident):
        raise PermissionDenied("You may look at this incident but not change it.")
    return incident


def can_change_restricted(user: User, incident: Incident) -> bool:
    """Who may restrict an incident or lift its restriction: someone who may work it
    and sees it whatever its flag (superusers, holders of the global
    `view_restricted_incident`, users granted this incident)."""
    return can_work(user, incident) and (
        user.is_superuser
        or user.has_perm("incidents.view_restricted_incident")
        or user.has_perm("incidents.view_incident", incident)
    )


def can_manage_object_permissions(user: User) -> bool:
    """The object-permission pages of Django admin grant access to any incident:
    superusers only, or holders of guardian's own change permissions on both user
    and group object permissions (a dedicated, deliberate grant)."""
    return user.is_superuser or (
        user.has_perm("guardian.change_userobjectpermission")
        and user.has_perm("guardian.change_groupobjectpermission")
    )


def dashboard_position(user: User) -> int:
    """How many changes the dashboard shows (DASHBOARD_KINDS) have committed on the
    incidents `user` may see: the dashboard's resume key for that viewer. A count, not
    an event id: ids are global, and their gaps would tell how much happened on the
    incidents the viewer may not see. It only grows while the viewer's access stays
    (a page compares it for equality, so a change of access redraws too); and unlike a
    maximum id, a change committed late still moves it."""
    events = TimelineEvent.objects.filter(kind__in=DASHBOARD_KINDS)
    condition = visible_condition(user, "incident__")
    return (events if condition is None else events.filter(condition)).count()
