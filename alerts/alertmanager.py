"""Alertmanager's webhook payload (version 4), validated before anything is written.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config

Everything we store is checked here (incidents.rules.inbound): no NUL or lone
surrogate in any text (keys included), lengths within their columns, counts within
PostgreSQL's integer, and every time inside the window (2000 to a year from now,
normalised to UTC). One bad alert refuses the whole delivery with a 400 that names
it: nothing is written, and Alertmanager does not retry a 4xx, so there is no retry
loop and no half-written group."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from incidents.rules import inbound

# Alertmanager sends this for "no end time yet".
ZERO_TIME_YEAR = 1


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 payload; nothing was written."""


Text = Annotated[str, AfterValidator(inbound.check_text)]
Labels = dict[Text, Text]


def _now(info: ValidationInfo) -> datetime:
    context = info.context if isinstance(info.context, dict) else {}
    return context.get("now") or datetime.now(UTC)


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: Text = ""
    fingerprint: Text = Field(min_length=1, max_length=200)  # Alert.fingerprint

    @field_validator("startsAt")
    @classmethod
    def _start(cls, value: datetime, info: ValidationInfo) -> datetime:
        return inbound.check_instant(value, _now(info))

    @field_validator("endsAt")
    @classmethod
    def _end(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None and value.year <= ZERO_TIME_YEAR:
            return value  # Alertmanager's "no end time yet" (see ended_at)
        return inbound.check_instant(value, _now(info))

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "").strip() or "unnamed alert"

    @property
    def ended_at(self) -> datetime | None:
        if self.endsAt is None or self.endsAt.year <= ZERO_TIME_YEAR:
            return None
        return self.endsAt


class PayloadIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: Text = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0, le=inbound.INT32_MAX)  # Delivery's column
    status: Literal["firing", "resolved"]
    receiver: Text = Field(default="", max_length=200)  # AlertGroup.receiver
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: Text = ""
    alerts: list[AlertIn] = Field(min_length=1, max_length=10_000)


def parse(body: bytes, *, now: datetime | None = None) -> PayloadIn:
    try:
        return PayloadIn.model_validate_json(body, context={"now": now or datetime.now(UTC)})
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors()[:5])
        raise PayloadError(f"Not an Alertmanager v4 payload: {problems}") from None


def _where(loc: tuple[int | str, ...]) -> str:
    """An error's place, e.g. `alerts.3.startsAt` (the fourth alert), printable."""
    where = ".".join(str(part) for part in loc) or "body"
    return where.encode("unicode_escape").decode("ascii")[:200]
