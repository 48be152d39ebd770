"""Runbooks as data, the targets their checks point at, and every check run."""

from __future__ import annotations

import dataclasses
import os
import string
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .probes.base import ProbeError, get_probe, parse_params, seconds_words
from .probes.secrets import FORBIDDEN_SECRET_ENV, secret_env_refusal  # noqa: F401 (re-exported)


class TargetKind(models.TextChoices):
    HTTP = "http", "HTTP endpoint (API health)"
    BANCA = "banca", "Banca endpoint"
    POSTGRES = "postgres", "PostgreSQL"
    REDIS = "redis", "Redis"
    RABBITMQ = "rabbitmq", "RabbitMQ"
    PROMETHEUS = "prometheus", "Prometheus"
    KUBERNETES = "kubernetes", "Kubernetes"
    STRIPE = "stripe", "Stripe"


# The settings whose values are LotoOps's own secrets: a target's secret equal to
# one of them is never used either (an allowed name set to the same value).
_OWN_SECRET_SETTINGS = (
    "SECRET_KEY",
    "EMAIL_HOST_PASSWORD",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
    "NOTIFY_WEBHOOK_SECRET",
    "NOTIFY_WEBHOOK_URL",
)
_OWN_SECRET_URLS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")


def _own_secret_values() -> set[str]:
    values = {str(getattr(settings, name, "") or "") for name in _OWN_SECRET_SETTINGS}
    for name in _OWN_SECRET_URLS:
        try:
            values.add(urlsplit(str(getattr(settings, name, "") or "")).password or "")
        except ValueError:
            continue
    return {v for v in values if v}


class Target(models.Model):
    """Where checks point. The URL carries no password: the secret (password or
    token) is read at run time from the environment variable named here."""

    name = models.CharField(max_length=80, unique=True, help_text="e.g. lotolink-db")
    kind = models.CharField(max_length=20, choices=TargetKind.choices)
    url = models.CharField(
        max_length=500,
        help_text="Address without password, e.g. postgres://lotolink@db:5432/lotolink",
    )
    secret_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the password or token",
    )
    options = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        parts = urlsplit(self.url)
        if not parts.scheme:
            raise ValidationError({"url": "Give a full URL with its scheme."})
        if parts.password:
            raise ValidationError(
                {"url": "Do not put a password in the URL: name its environment variable."}
            )
        if refusal := secret_env_refusal(self.secret_env):
            raise ValidationError({"secret_env": refusal})

    def secret_refusal(self) -> str:
        """Why this target's secret will not be used ("" when it will): checked at
        run time too, so a row written around the admin cannot send LotoOps's own
        secrets anywhere."""
        if refusal := secret_env_refusal(self.secret_env):
            return refusal
        value = os.environ.get(self.secret_env, "") if self.secret_env else ""
        if value and value in _own_secret_values():
            return f"{self.secret_env} holds one of LotoOps's own secrets: it is never sent."
        return ""

    def secret(self) -> str:
        if not self.secret_env or self.secret_refusal():
            return ""
        return os.environ.get(self.secret_env, "")

    def url_with_secret(self) -> str:
        """The URL with the secret as its password (never store or print it)."""
        secret = self.secret()
        if not secret:
            return self.url
        parts = urlsplit(self.url)
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Runbook(models.Model):
    """One procedure of the runbook (sections 1–6 and the command reference)."""

    key = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=120)
    section = models.CharField(max_length=20, help_text="Runbook section: 1–6 or reference")
    categories = models.JSONField(
        default=list, blank=True, help_text="Incident categories this procedure is for"
    )
    symptoms = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return f"{self.section}. {self.title}"


class StepKind(models.TextChoices):
    DIAGNOSTIC = "diagnostic", "Diagnostic"
    ACTION = "action", "Resolution action"
    # Interactive by nature (a shell in a pod, a psql session): the page shows the
    # exact command to copy and never runs it.
    MANUAL = "manual", "Run by hand (copy the command)"


class RunbookStep(models.Model):
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=60, unique=True, help_text="Stable id, e.g. db.locks")
    title = models.CharField(
        max_length=200,
        help_text="May name a parameter in braces, e.g. “Queries running over {min_seconds}”: "
        "the page shows its value (5 min), so the title follows the parameter",
    )
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    probe = models.CharField(max_length=60, help_text="Probe name, e.g. postgres.locks")
    target_kind = models.CharField(max_length=20, choices=TargetKind.choices)
    params = models.JSONField(default=dict, blank=True)
    finds = models.JSONField(default=list, blank=True, help_text="Evidence keys it can find")
    recommended_by = models.JSONField(
        default=list, blank=True, help_text="Evidence keys that recommend this action"
    )
    every_target = models.BooleanField(
        default=False, help_text="Run once per active target of its kind (e.g. every banca)"
    )
    command = models.TextField(blank=True, help_text="The runbook's command, for reference")
    timeout_seconds = models.PositiveIntegerField(default=30)
    order = models.PositiveSmallIntegerField(default=0)
    requires_approval = models.BooleanField(
        default=False,
        help_text="An action that always waits for a second person's approval "
        "(actions on incidents of ACTION_APPROVAL_SEVERITIES always do)",
    )

    class Meta:
        ordering = ["runbook__order", "order"]

    def __str__(self) -> str:
        return f"{self.key}: {self.title}"

    @property
    def is_action(self) -> bool:
        return self.kind == StepKind.ACTION

    def probe_class(self) -> Any:
        return get_probe(self.probe)

    @property
    def display_title(self) -> str:
        """The title with its {parameter} placeholders filled from the step's
        parameters (or the probe's defaults): durations as a title says them."""
        return title_with_params(self.title, self.probe_class(), self.params)

    @property
    def available(self) -> bool:
        return self.kind != StepKind.MANUAL and self.probe_class() is not None

    def kind_mismatch(self) -> str:
        """Why this step's kind does not follow its probe ("" when it does): an
        action probe only ever runs as a confirmed action, never as a diagnostic
        (whatever the row says), and an action step needs an action probe."""
        probe = self.probe_class()
        if probe is None or self.kind == StepKind.MANUAL:
            return ""
        if probe.action and self.kind != StepKind.ACTION:
            return f"{self.probe} changes the platform: only an action step may use it."
        if not probe.action and self.kind == StepKind.ACTION:
            return f"{self.probe} is a diagnostic probe: an action step needs an action probe."
        return ""

    def clean(self) -> None:
        probe = self.probe_class()
        if probe is None:
            return  # a probe to come: the page shows "not available yet"
        if mismatch := self.kind_mismatch():
            raise ValidationError({"kind": mismatch})
        if probe.target_kind != self.target_kind:
            raise ValidationError({"target_kind": f"{self.probe} runs against {probe.target_kind}"})
        try:
            parse_params(probe.Params, self.params)
        except ProbeError as exc:
            raise ValidationError({"params": str(exc)}) from None
        if refusal := title_refusal(self.title, probe):
            raise ValidationError({"title": refusal})


def _placeholders(title: str) -> list[str] | None:
    """The {names} a title uses, or None when its braces are malformed."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(title) if name is not None]
    except ValueError:
        return None


def title_refusal(title: str, probe: Any) -> str:
    """Why a title's placeholders cannot be filled from the probe's parameters."""
    names = _placeholders(title)
    if names is None:
        return "Unbalanced braces: name a parameter as {min_seconds}."
    known = {f.name for f in dataclasses.fields(probe.Params)}
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        choices = ", ".join(sorted(known)) or "none"
        return (
            f"The title names {', '.join('{' + n + '}' for n in unknown)}, which {probe.name} "
            f"does not have (its parameters: {choices})."
        )
    return ""


def title_with_params(title: str, probe: Any, params: dict[str, Any]) -> str:
    names = _placeholders(title)
    if not names or probe is None:
        return title
    try:
        values = parse_params(probe.Params, params)
    except ProbeError:
        return title
    filled = {}
    for name in names:
        value = getattr(values, name, None)
        if value is None:
            return title
        filled[name] = _param_words(name, value)
    return title.format(**filled)


def _param_words(name: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name.endswith("_seconds"):
            return seconds_words(value)
        if name.endswith("_minutes"):
            return seconds_words(value * 60)
        return f"{value:g}"
    return str(value)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class CheckRun(models.Model):
    """One execution of a step for an incident."""

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="check_runs"
    )
    step = models.ForeignKey(RunbookStep, on_delete=models.PROTECT, related_name="runs")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="runs")
    target_name = models.CharField(max_length=80, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True)
    plan = models.TextField(blank=True, help_text="What an action said it would do, confirmed")
    batch = models.CharField(max_length=40, blank=True, help_text="Run-all group")

    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    outcome = models.CharField(max_length=10, blank=True)
    summary = models.TextField(blank=True)
    output = models.TextField(blank=True)
    output_size = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    version = models.PositiveIntegerField(default=0, help_text="Bumped on every change")

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["incident", "-id"], name="checkrun_incident"),
            models.Index(fields=["status", "heartbeat_at"], name="checkrun_status"),
        ]

    def __str__(self) -> str:
        return f"{self.step.key} #{self.pk} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def duration(self) -> Any:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class WorkerHeartbeat(models.Model):
    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%H:%M:%S}"


class ActionConfirmation(models.Model):
    """A used confirmation: its nonce is unique, so a signed plan queues its action
    once, however often (or however concurrently) it is posted."""

    nonce = models.CharField(max_length=64, unique=True)
    incident = models.ForeignKey("incidents.Incident", on_delete=models.CASCADE, related_name="+")
    step_key = models.CharField(max_length=60)
    run = models.OneToOneField(
        CheckRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="confirmation"
    )
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    used_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.step_key} confirmation (run #{self.run_id})"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Awaiting approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


class ActionApproval(models.Model):
    """A confirmed action waiting for a second person: the exact plan, target and
    parameters the requester confirmed; approving queues exactly that, once."""

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="action_approvals"
    )
    step = models.ForeignKey(RunbookStep, on_delete=models.PROTECT, related_name="approvals")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    target_name = models.CharField(max_length=80)
    params = models.JSONField(default=dict, blank=True)
    plan = models.TextField()
    status = models.CharField(
        max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    run = models.OneToOneField(
        CheckRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("approve_actions", "Can approve resolution actions on every incident")]
        indexes = [models.Index(fields=["incident", "status"], name="approval_incident_status")]

    def __str__(self) -> str:
        return f"{self.step.key} for #{self.incident_id} ({self.status})"

    def expired(self, now: Any = None) -> bool:
        return (now or timezone.now()) >= self.expires_at
