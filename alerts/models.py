"""What arrives from Alertmanager and Stripe, and the rules (data, edited in admin)
that turn it into incidents."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from diagnostics.models import Runbook
from incidents.models import Category, Incident, Severity


class Source(models.TextChoices):
    ALERTMANAGER = "alertmanager", "Alertmanager"


class IngestToken(models.Model):
    """A bearer token a sender presents. Only its SHA-256 is stored (the token is
    32 random bytes, so a fast hash is enough); it is shown once, on creation."""

    name = models.CharField(max_length=100, help_text="Who uses it, e.g. alertmanager-prod")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.ALERTMANAGER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="To recognise it")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class SeverityRule(models.Model):
    """An alert whose `label` equals `value` gets this severity (first by order)."""

    order = models.PositiveSmallIntegerField(default=0)
    label = models.CharField(max_length=100, default="severity")
    value = models.CharField(max_length=200)
    severity = models.ForeignKey(Severity, on_delete=models.CASCADE)
    may_declare = models.BooleanField(
        default=True, help_text="Off: alerts of this severity only join an open incident"
    )

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.label}={self.value} → {self.severity.key}"


class CategoryRule(models.Model):
    """An alert whose labels include every `matchers` pair gets this category
    (first by order; empty matchers match every alert)."""

    order = models.PositiveSmallIntegerField(default=0)
    matchers = models.JSONField(default=dict, blank=True, help_text='e.g. {"service": "stripe"}')
    category = models.CharField(max_length=20, choices=Category.choices)
    may_declare = models.BooleanField(
        default=True, help_text="Off: these alerts only join an open incident"
    )
    mitigate_on_resolve = models.BooleanField(
        default=False,
        help_text="When every alert of an acknowledged incident resolves, move it to mitigated",
    )

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(self.matchers.items())) or "any alert"
        return f"{pairs} → {self.category}"

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.matchers.items())


class AutoRun(models.Model):
    """Diagnostics that start by themselves when an alert declares an incident of
    `category`: every available diagnostic of `runbook` ("Run all")."""

    category = models.CharField(max_length=20, choices=Category.choices)
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["category", "runbook"], name="autorun_once"),
        ]

    def __str__(self) -> str:
        return f"{self.category}: run all of {self.runbook.key}"


class AlertGroup(models.Model):
    """One Alertmanager group (its groupKey, stored as a SHA-256: keys can be long);
    the open incident its alerts join."""

    key_hash = models.CharField(max_length=64, unique=True)
    group_key = models.TextField()
    receiver = models.CharField(max_length=200, blank=True)
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.group_key[:80]


class Alert(models.Model):
    """One firing of one alert: its fingerprint and start time. The unique
    constraint is what makes repeated, concurrent and HA deliveries land once."""

    fingerprint = models.CharField(max_length=200)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    group = models.ForeignKey(AlertGroup, on_delete=models.CASCADE, related_name="alerts")
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    name = models.CharField(max_length=200)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict)
    generator_url = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "starts_at"], name="alert_once"),
        ]
        indexes = [models.Index(fields=["fingerprint"], name="alert_fingerprint")]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class Delivery(models.Model):
    """Every accepted webhook delivery (repeats included), with what it changed."""

    token = models.ForeignKey(IngestToken, null=True, on_delete=models.SET_NULL)
    group = models.ForeignKey(AlertGroup, on_delete=models.CASCADE, related_name="deliveries")
    received_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20)
    alerts = models.PositiveIntegerField(default=0)
    truncated_alerts = models.PositiveIntegerField(default=0)
    new_alerts = models.PositiveIntegerField(default=0)
    resolved_alerts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M:%S} {self.status} ({self.alerts})"


class StripeEvent(models.Model):
    """Each Stripe event once (its id is unique: Stripe retries and duplicates land once)."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="When Stripe created the event")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    failure = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class StripeLock(models.Model):
    """One row, locked by every Stripe delivery that may declare: of two deliveries
    crossing the threshold together, one declares and the other joins."""


class StripeMinute(models.Model):
    """One minute of Stripe failures on one incident: the first is on the timeline at
    once, the rest are counted here and summarised in one event when the minute ends."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE)
    minute = models.DateTimeField()
    more = models.PositiveIntegerField(default=0)
    types = models.JSONField(default=dict)
    codes = models.JSONField(default=dict)
    summarized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["incident", "minute"], name="stripe_minute_once"),
        ]

    def __str__(self) -> str:
        return f"#{self.incident_id} {self.minute:%H:%M} +{self.more}"
