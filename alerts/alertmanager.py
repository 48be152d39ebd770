"""Alertmanager's webhook payload (version 4), validated before anything is written.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Alertmanager sends this for "no end time yet".
ZERO_TIME_YEAR = 1


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 payload; nothing was written."""


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=200)

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("times must carry a time zone (RFC 3339)")
        return value

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "") or "unnamed alert"

    @property
    def ended_at(self) -> datetime | None:
        if self.endsAt is None or self.endsAt.year <= ZERO_TIME_YEAR:
            return None
        return self.endsAt


class PayloadIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertIn] = Field(min_length=1, max_length=10_000)


def parse(body: bytes) -> PayloadIn:
    try:
        return PayloadIn.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise PayloadError(f"Not an Alertmanager v4 payload: {problems}") from None
