"""What the API reads and writes. Text is refused with a NUL character or a lone
surrogate (PostgreSQL cannot store them), anywhere, usernames included: a 422 instead
of a server error. Lengths and ranges are the pages' own (incidents.rules.inbound)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from django.contrib.auth.models import AbstractBaseUser
from ninja import Field, Schema
from pydantic import AfterValidator

from diagnostics.models import CheckRun, RunStatus
from incidents.models import (
    INCIDENT_FLAGS,
    ActionItem,
    ActionItemStatus,
    Category,
    EventKind,
    Incident,
    PostMortem,
    Status,
    TimelineEvent,
)
from incidents.rules import inbound

CategoryName = Literal[tuple(Category.values)]  # type: ignore[valid-type]
StatusName = Literal[tuple(Status.values)]  # type: ignore[valid-type]
FlagName = Literal[tuple(INCIDENT_FLAGS)]  # type: ignore[valid-type]
ActionItemStatusName = Literal[tuple(ActionItemStatus.values)]  # type: ignore[valid-type]
EventKindName = Literal[tuple(EventKind.values)]  # type: ignore[valid-type]
RunStatusName = Literal[tuple(RunStatus.values)]  # type: ignore[valid-type]
MAX_ID = 2**53


# The limits the pages' forms share (incidents.rules.inbound).
Text = Annotated[str, AfterValidator(inbound.check_text)]


def _name(user: AbstractBaseUser | None) -> str | None:
    return user.get_username() if user is not None else None


class Error(Schema):
    detail: str


class Invalid(Schema):
    """422: the request does not match the schema (django-ninja's validation errors)."""

    detail: list[dict[str, Any]]


class IncidentOut(Schema):
    id: int
    title: str
    category: CategoryName
    severity: str
    status: StatusName
    summary: str
    impacted_services: list[str]
    affected_users: int | None
    commander: str | None
    declared_by: str | None
    restricted: bool
    flags: list[str]
    alert_fingerprint: str
    channel_name: str
    declared_at: datetime
    response_deadline: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    allowed_transitions: list[str]

    @staticmethod
    def resolve_severity(obj: Incident) -> str:
        return obj.severity.key

    @staticmethod
    def resolve_commander(obj: Incident) -> str | None:
        return _name(obj.commander)

    @staticmethod
    def resolve_declared_by(obj: Incident) -> str | None:
        return _name(obj.declared_by)

    @staticmethod
    def resolve_flags(obj: Incident) -> list[str]:
        return [flag for flag in INCIDENT_FLAGS if getattr(obj, flag)]

    @staticmethod
    def resolve_allowed_transitions(obj: Incident) -> list[str]:
        return list(obj.allowed_transitions())


class IncidentPage(Schema):
    items: list[IncidentOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class DeclareIn(Schema):
    title: Annotated[Text, Field(min_length=1, max_length=inbound.MAX_TITLE)]
    category: CategoryName
    severity: Annotated[str, Field(description="P0, P1, P2 or P3", pattern=r"^P[0-9]$")]
    summary: Annotated[Text, Field(max_length=inbound.MAX_SUMMARY)] = ""
    impacted_services: Annotated[
        list[Annotated[Text, Field(max_length=inbound.MAX_SERVICE)]],
        Field(max_length=inbound.MAX_SERVICES),
    ] = []
    affected_users: Annotated[int, Field(ge=0, le=inbound.INT32_MAX)] | None = None
    flags: list[FlagName] = []


class TransitionIn(Schema):
    status: StatusName
    note: Annotated[Text, Field(max_length=inbound.MAX_REASON)] = ""
    # Only with status "resolved", and only for incident commanders
    # (incidents.override_recovery): resolve without verified recovery, for this reason.
    override_reason: Annotated[Text, Field(max_length=inbound.MAX_REASON)] = ""


class TextIn(Schema):
    text: Annotated[Text, Field(min_length=1, max_length=inbound.MAX_TEXT)]


class EventOut(Schema):
    id: int
    kind: str
    message: str
    actor: str | None
    created_at: datetime
    data: dict[str, Any]

    @staticmethod
    def resolve_actor(obj: TimelineEvent) -> str | None:
        return _name(obj.actor)


class EventPage(Schema):
    items: list[EventOut]
    next_after: int | None = Field(description="Pass as `after` to read on (the last id seen)")


class CheckRequestIn(Schema):
    step: Annotated[Text, Field(min_length=1, max_length=60, description="e.g. db.locks")]
    target: (
        Annotated[Text, Field(max_length=80, description="Target name (default: the step's)")]
        | None
    ) = None


class CheckRunOut(Schema):
    id: int
    incident: int
    step: str
    target: str
    status: RunStatusName
    outcome: str
    summary: str
    output: str
    result: dict[str, Any]
    evidence: dict[str, Any]
    requested_by: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_incident(obj: CheckRun) -> int:
        return obj.incident_id

    @staticmethod
    def resolve_step(obj: CheckRun) -> str:
        return obj.step.key

    @staticmethod
    def resolve_target(obj: CheckRun) -> str:
        return obj.target_name

    @staticmethod
    def resolve_requested_by(obj: CheckRun) -> str | None:
        return _name(obj.requested_by)


class PostMortemOut(Schema):
    incident: int
    title: str
    author: str
    summary: str
    root_cause: str
    impact_users: str
    impact_revenue: str
    impact_data: str
    resolution: str
    lessons_learned: str
    timeline_event_ids: list[int]
    version: int
    updated_at: datetime

    @staticmethod
    def resolve_incident(obj: PostMortem) -> int:
        return obj.incident_id


class SectionIn(Schema):
    values: dict[Annotated[str, Field(max_length=40)], Annotated[Text, Field(max_length=50_000)]]
    version: Annotated[int, Field(ge=0, le=MAX_ID)]
    original: dict[
        Annotated[str, Field(max_length=40)], Annotated[Text, Field(max_length=50_000)]
    ] = {}


class ActionItemOut(Schema):
    id: int
    incident: int
    text: str
    owner: str | None
    due_date: date | None
    status: ActionItemStatusName
    step: str | None
    verified_at: datetime | None

    @staticmethod
    def resolve_incident(obj: ActionItem) -> int:
        return obj.incident_id

    @staticmethod
    def resolve_owner(obj: ActionItem) -> str | None:
        return _name(obj.owner)

    @staticmethod
    def resolve_step(obj: ActionItem) -> str | None:
        return obj.step.key if obj.step_id else None


class ActionItemIn(Schema):
    text: Annotated[Text, Field(min_length=1, max_length=inbound.MAX_ACTION_ITEM)]
    owner: (
        Annotated[Text, Field(max_length=inbound.MAX_USERNAME, description="Username")] | None
    ) = None
    due_date: date | None = None


class ActionItemUpdateIn(Schema):
    status: ActionItemStatusName
    owner: (
        Annotated[Text, Field(max_length=inbound.MAX_USERNAME, description="Username")] | None
    ) = None
    due_date: date | None = None
