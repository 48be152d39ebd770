"""Every state change of an incident, one function each.

Each runs in one transaction, locks the incident row, refuses what the current
state does not allow (raising IncidentError and changing nothing), and appends
the timeline event in the same transaction. Views, tasks and admin actions call
these; nothing else writes an incident's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from guardian.shortcuts import assign_perm, get_perms, remove_perm

from . import signals
from .models import (
    INCIDENT_FLAGS,
    REOPENABLE,
    STATUS_TIMESTAMP,
    Category,
    ChecklistItem,
    ChecklistPhase,
    ChecklistTemplate,
    EventKind,
    Incident,
    Severity,
    Status,
    TimelineEvent,
    UserProfile,
    channel_name_for,
)
from .rules.text import format_duration as _duration
from .timeline import actor_name, append_event

# The lists a new incident starts with (the runbook's section 1).
DECLARE_PHASES = (ChecklistPhase.INITIAL, ChecklistPhase.ASSESS, ChecklistPhase.COMMUNICATION)


class IncidentError(ValueError):
    """A change the incident's current state does not allow; nothing was changed."""


def _locked(incident: Incident) -> Incident:
    """The incident's row, locked until the surrounding transaction ends."""
    return Incident.objects.select_for_update().select_related("severity").get(pk=incident.pk)


def _clean_services(services: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for service in services:
        service = service.strip()
        if service and service not in seen:
            seen.append(service)
    return seen


def declare_incident(
    *,
    title: str,
    category: str,
    severity: Severity,
    actor: AbstractBaseUser | None,
    summary: str = "",
    impacted_services: Iterable[str] = (),
    affected_users: int | None = None,
    commander: AbstractBaseUser | None = None,
    restricted: bool | None = None,
    alert_fingerprint: str = "",
    flags: Iterable[str] = (),
    now: datetime | None = None,
) -> Incident:
    """Open an incident: start its SLA clock, its checklists and its timeline."""
    title = title.strip()
    if not title:
        raise IncidentError("An incident needs a title.")
    if category not in Category.values:
        raise IncidentError(f"Unknown category {category!r}.")
    flags = set(flags)
    if flags - set(INCIDENT_FLAGS):
        raise IncidentError(f"Unknown flags: {', '.join(sorted(flags - set(INCIDENT_FLAGS)))}.")
    now = now or timezone.now()
    if restricted is None:
        restricted = category == Category.SECURITY
    with transaction.atomic():
        incident = Incident.objects.create(
            title=title,
            category=category,
            severity=severity,
            summary=summary.strip(),
            impacted_services=_clean_services(impacted_services),
            affected_users=affected_users,
            commander=commander,
            declared_by=actor,
            restricted=restricted,
            alert_fingerprint=alert_fingerprint,
            # A restricted incident's channel (sent to Slack, named in pages) never
            # carries its title.
            channel_name=channel_name_for(
                f"restricted {get_random_string(6, 'abcdefghijkmnpqrstuvwxyz23456789')}"
                if restricted
                else title,
                now,
            ),
            declared_at=now,
            response_deadline=now + severity.response_time,
            **{flag: flag in flags for flag in INCIDENT_FLAGS},
        )
        for user in {u for u in (actor, commander) if u is not None}:
            assign_perm("incidents.view_incident", user, incident)
            assign_perm("incidents.change_incident", user, incident)
        create_checklists(incident, DECLARE_PHASES, start=now)
        append_event(
            incident,
            EventKind.DECLARED,
            f"{actor_name(actor)} declared {severity.key} "
            f"{incident.get_category_display().lower()} "
            f"incident: {title}",
            actor=actor,
            data={
                "severity": severity.key,
                "category": category,
                "response_deadline": incident.response_deadline.isoformat(),
                "channel": incident.channel_name,
                "flags": sorted(flags),
                # Declared by an alert: the report's first row is the alert's own.
                **({"alert_fingerprint": alert_fingerprint} if alert_fingerprint else {}),
            },
            at=now,
        )
        signals.incident_declared.send(sender=Incident, incident=incident, actor=actor, now=now)
    return incident


def create_checklists(
    incident: Incident, phases: Iterable[str], *, start: datetime
) -> list[ChecklistItem]:
    items = [
        ChecklistItem(
            incident=incident,
            phase=template.phase,
            text=item.text,
            order=item.order,
            due_at=start + template.due_after if template.due_after else None,
        )
        for template in ChecklistTemplate.objects.filter(phase__in=list(phases)).prefetch_related(
            "items"
        )
        for item in template.items.all()
    ]
    return ChecklistItem.objects.bulk_create(items)


def acknowledge_incident(
    incident: Incident, *, actor: AbstractBaseUser, now: datetime | None = None
) -> TimelineEvent:
    """Acknowledge once: of two people acknowledging together, one wins, the other is told."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _locked(incident)
        if locked.status != Status.DECLARED:
            by = f" by {actor_name(locked.acknowledged_by)}" if locked.acknowledged_by else ""
            raise IncidentError(f"Incident #{locked.pk} is already acknowledged{by}.")
        locked.status = Status.ACKNOWLEDGED
        locked.acknowledged_at = now
        locked.acknowledged_by = actor
        locked.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "updated_at"])
        took = now - locked.declared_at
        met = now <= locked.response_deadline
        event = append_event(
            locked,
            EventKind.ACKNOWLEDGED,
            f"{actor_name(actor)} acknowledged after {_duration(took)} "
            f"({'within' if met else 'outside'} the {locked.severity.key} response time)",
            actor=actor,
            data={"status": Status.ACKNOWLEDGED, "sla_met": met, "seconds": took.total_seconds()},
            at=now,
        )
        signals.incident_acknowledged.send(sender=Incident, incident=locked, actor=actor, now=now)
    incident.refresh_from_db()
    return event


def transition_incident(
    incident: Incident,
    to_status: str,
    *,
    actor: AbstractBaseUser,
    note: str = "",
    now: datetime | None = None,
) -> TimelineEvent:
    """Move an acknowledged incident along its lifecycle."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _locked(incident)
        if to_status not in locked.allowed_transitions():
            raise IncidentError(_refusal(locked, to_status))
        if to_status == Status.RESOLVED and (held := _resolution_held(locked, actor, now, note)):
            incident.refresh_from_db()
            return held
        from_status = locked.status
        locked.status = to_status
        setattr(locked, STATUS_TIMESTAMP[to_status], now)
        locked.save(update_fields=["status", STATUS_TIMESTAMP[to_status], "updated_at"])
        message = (
            f"{actor_name(actor)} moved the incident from {Status(from_status).label.lower()} "
            f"to {Status(to_status).label.lower()}"
        )
        if note.strip():
            message += f": {note.strip()}"
        event = append_event(
            locked,
            EventKind.STATUS,
            message,
            actor=actor,
            data={"status": to_status, "from": from_status},
            at=now,
        )
        if to_status == Status.RESOLVED:
            signals.incident_resolved.send(sender=Incident, incident=locked, actor=actor, now=now)
    incident.refresh_from_db()
    return event


def _resolution_held(
    incident: Incident, actor: AbstractBaseUser | None, now: datetime, note: str
) -> TimelineEvent | None:
    """What holds a resolution back (the event saying so), or None to resolve now.
    Every path to "resolved" (pages, API, tasks) comes through here: recovery
    verification listens to `resolution_requested`; an incident whose procedure names
    no recovery checks resolves at once, as it always did."""
    responses = signals.resolution_requested.send(
        sender=Incident, incident=incident, actor=actor, now=now, note=note
    )
    for _receiver, response in responses:
        if isinstance(response, TimelineEvent):
            return response
    return None


def _refusal(incident: Incident, to_status: str) -> str:
    current = Status(incident.status).label.lower()
    if to_status not in Status.values:
        return f"Unknown status {to_status!r}."
    if incident.status == Status.DECLARED:
        return "Acknowledge the incident first."
    if incident.status in REOPENABLE and to_status not in incident.allowed_transitions():
        return f"The incident is {current}: reopen it, with a reason, to work it again."
    return f"An incident that is {current} cannot move to {Status(to_status).label.lower()}."


def reopen_incident(
    incident: Incident, *, actor: AbstractBaseUser, reason: str, now: datetime | None = None
) -> TimelineEvent:
    """Put a resolved or closed incident back under investigation."""
    reason = reason.strip()
    if not reason:
        raise IncidentError("Say why the incident is reopened.")
    now = now or timezone.now()
    with transaction.atomic():
        locked = _locked(incident)
        if locked.status not in REOPENABLE:
            raise IncidentError("Only a resolved or closed incident can be reopened.")
        from_status = locked.status
        locked.status = Status.INVESTIGATING
        locked.investigating_at = now
        locked.reopened_at = now
        locked.resolved_at = None
        locked.closed_at = None
        locked.save(
            update_fields=[
                "status",
                "investigating_at",
                "reopened_at",
                "resolved_at",
                "closed_at",
                "updated_at",
            ]
        )
        event = append_event(
            locked,
            EventKind.REOPENED,
            f"{actor_name(actor)} reopened the incident: {reason}",
            actor=actor,
            data={"status": Status.INVESTIGATING, "from": from_status, "reason": reason},
            at=now,
        )
    incident.refresh_from_db()
    return event


def change_severity(
    incident: Incident, severity: Severity, *, actor: AbstractBaseUser, reason: str
) -> TimelineEvent:
    """Re-rate the incident; the response deadline follows the new severity."""
    reason = reason.strip()
    if not reason:
        raise IncidentError("Say why the severity changes.")
    with transaction.atomic():
        locked = _locked(incident)
        if not locked.is_open:
            raise IncidentError("The severity of a resolved or closed incident is final.")
        if locked.severity_id == severity.pk:
            raise IncidentError(f"The incident is already {severity.key}.")
        old = locked.severity
        locked.severity = severity
        locked.response_deadline = locked.declared_at + severity.response_time
        locked.save(update_fields=["severity", "response_deadline", "updated_at"])
        event = append_event(
            locked,
            EventKind.SEVERITY,
            f"{actor_name(actor)} changed the severity from {old.key} to {severity.key}: {reason}",
            actor=actor,
            data={
                "from": old.key,
                "to": severity.key,
                "reason": reason,
                "response_deadline": locked.response_deadline.isoformat(),
            },
        )
        signals.severity_changed.send(
            sender=Incident, incident=locked, actor=actor, old=old, new=severity
        )
    incident.refresh_from_db()
    return event


def assign_commander(
    incident: Incident, commander: AbstractBaseUser, *, actor: AbstractBaseUser
) -> TimelineEvent:
    with transaction.atomic():
        locked = _locked(incident)
        if locked.commander_id == commander.pk:
            raise IncidentError(f"{actor_name(commander)} is already the commander.")
        previous = locked.commander
        locked.commander = commander
        locked.save(update_fields=["commander", "updated_at"])
        granted = False
        if locked.restricted:
            granted = not _holds(commander, locked, COMMANDER_PERMISSIONS)
            for perm in COMMANDER_PERMISSIONS:
                assign_perm(perm, commander, locked)
        message = f"{actor_name(actor)} made {actor_name(commander)} the incident commander"
        revoked = previous is not None and _access_came_with_command(locked, previous)
        if revoked:
            for perm in COMMANDER_PERMISSIONS:
                remove_perm(perm, previous, locked)
            message += f"; {actor_name(previous)} no longer has the access command gave"
        event = append_event(
            locked,
            EventKind.COMMANDER,
            message,
            actor=actor,
            data={
                "commander": commander.get_username(),
                "granted_access": granted,
                "revoked_access": previous.get_username() if revoked and previous else None,
            },
        )
    incident.refresh_from_db()
    return event


COMMANDER_PERMISSIONS = ("incidents.view_incident", "incidents.change_incident")


def _holds(user: AbstractBaseUser, incident: Incident, perms: Iterable[str]) -> bool:
    """Whether `user` was granted all `perms` on this very incident (not globally)."""
    codenames = {perm.split(".", 1)[1] for perm in perms}
    return codenames <= set(get_perms(user, incident))


def _access_came_with_command(incident: Incident, user: AbstractBaseUser) -> bool:
    """Whether `user`'s grant on the incident came from being its commander (so a new
    commander takes it away): granted when they were named at declaration (unless they
    declared it) or when the assignment that named them granted it."""
    if user.pk == incident.declared_by_id:
        return False
    named = (
        incident.timeline.filter(kind=EventKind.COMMANDER, data__commander=user.get_username())
        .order_by("-id")
        .first()
    )
    if named is None:  # named when the incident was declared: declare_incident granted it
        return True
    return bool(named.data.get("granted_access"))


def add_note(incident: Incident, text: str, *, actor: AbstractBaseUser) -> TimelineEvent:
    text = text.strip()
    if not text:
        raise IncidentError("A note cannot be empty.")
    with transaction.atomic():
        locked = _locked(incident)
        return append_event(locked, EventKind.NOTE, text, actor=actor)


def post_status_update(incident: Incident, text: str, *, actor: AbstractBaseUser) -> TimelineEvent:
    """A status update for stakeholders, stamped with the incident's current state."""
    text = text.strip()
    if not text:
        raise IncidentError("A status update cannot be empty.")
    with transaction.atomic():
        locked = _locked(incident)
        event = append_event(
            locked,
            EventKind.STATUS_UPDATE,
            text,
            actor=actor,
            data={
                "status": locked.status,
                "severity": locked.severity.key,
                "channel": locked.channel_name,
            },
        )
        signals.status_update_posted.send(sender=Incident, incident=locked, event=event)
        return event


def set_checklist_item(
    item: ChecklistItem, *, done: bool, actor: AbstractBaseUser
) -> TimelineEvent | None:
    """Tick or untick one item; ticking what is already ticked changes nothing."""
    with transaction.atomic():
        locked_incident = _locked(item.incident)
        locked = ChecklistItem.objects.select_for_update().get(pk=item.pk)
        if locked.done == done:
            return None
        locked.done_at = timezone.now() if done else None
        locked.done_by = actor if done else None
        locked.save(update_fields=["done_at", "done_by"])
        verb = "ticked" if done else "unticked"
        event = append_event(
            locked_incident,
            EventKind.CHECKLIST,
            f"{actor_name(actor)} {verb} “{locked.text}”",
            actor=actor,
            data={"item": locked.pk, "done": done, "phase": locked.phase},
        )
    item.refresh_from_db()
    return event


# --- escalation flags and paging ----------------------------------------------------


def set_incident_flags(
    incident: Incident, flags: Iterable[str], *, actor: AbstractBaseUser
) -> TimelineEvent | None:
    """Set the escalation flags (security, data loss, data breach, regulatory); who
    must be told is re-evaluated once the change commits. No change: None."""
    wanted = set(flags)
    if wanted - set(INCIDENT_FLAGS):
        raise IncidentError(f"Unknown flags: {', '.join(sorted(wanted - set(INCIDENT_FLAGS)))}.")
    with transaction.atomic():
        locked = _locked(incident)
        before = set(locked.flags)
        if before == wanted:
            return None
        for flag in INCIDENT_FLAGS:
            setattr(locked, flag, flag in wanted)
        locked.save(update_fields=[*INCIDENT_FLAGS, "updated_at"])
        added, removed = sorted(wanted - before), sorted(before - wanted)
        words = [f"set {', '.join(f.replace('_', ' ') for f in added)}"] if added else []
        words += [f"cleared {', '.join(f.replace('_', ' ') for f in removed)}"] if removed else []
        event = append_event(
            locked,
            EventKind.ESCALATION,
            f"{actor_name(actor)} {' and '.join(words)} (flags)",
            actor=actor,
            data={"flags": sorted(wanted), "added": added, "removed": removed},
        )
        signals.flags_changed.send(
            sender=Incident, incident=locked, actor=actor, added=added, removed=removed
        )
    incident.refresh_from_db()
    return event


def set_restricted(
    incident: Incident, restricted: bool, *, actor: AbstractBaseUser
) -> TimelineEvent | None:
    """Restrict an incident to the users granted it, or open it to everyone who may
    read incidents; on the timeline either way. No change: None. The actor keeps
    sight of an incident they restrict (they are granted it)."""
    with transaction.atomic():
        locked = _locked(incident)
        if locked.restricted == restricted:
            return None
        locked.restricted = restricted
        locked.save(update_fields=["restricted", "updated_at"])
        if restricted:
            assign_perm("incidents.view_incident", actor, locked)
        verb = (
            "restricted the incident to the people granted it"
            if restricted
            else "lifted the restriction: every user who may read incidents now sees it"
        )
        event = append_event(
            locked,
            EventKind.ESCALATION,
            f"{actor_name(actor)} {verb}",
            actor=actor,
            data={"restricted": restricted},
        )
    incident.refresh_from_db()
    return event


# --- the viewer's own settings ---------------------------------------------------------


def set_time_zone(user: AbstractBaseUser, zone: str) -> UserProfile:
    """The zone `user` reads times in ("" for the site's TIME_ZONE)."""
    profile, _ = UserProfile.objects.get_or_create(user=user)
    profile.time_zone = zone
    profile.full_clean()
    profile.save(update_fields=["time_zone"])
    return profile
