"""Incidents, severities and their SLAs, escalation contacts, checklists, timeline."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from .rules import sla
from .rules.choices import list_problem


def validate_positive_duration(value: timedelta | None) -> None:
    """Durations that say "within" or "after" (SLAs, outage limits, due dates,
    timeouts) are longer than zero: a negative one would mean breached at once."""
    if value is not None and value <= timedelta(0):
        raise ValidationError(
            "Enter a duration longer than zero, e.g. 00:15:00 for 15 minutes or "
            "2 00:00:00 for two days.",
            code="not_positive",
        )


DURATION_HELP = " Written [days] hh:mm:ss, e.g. 00:15:00 (15 minutes) or 1 00:00:00 (a day)."


class Severity(models.Model):
    """P0–P3 from the runbook's severity table; editable in admin."""

    key = models.CharField(max_length=4, unique=True, help_text="P0, P1, P2 or P3")
    name = models.CharField(max_length=40, help_text="Critical, High, Medium, Low")
    description = models.TextField()
    response_time = models.DurationField(
        validators=[validate_positive_duration],
        help_text="Acknowledge within this time (the SLA); unacknowledged past it, the "
        "incident escalates." + DURATION_HELP,
    )
    examples = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "key"]
        verbose_name_plural = "severities"

    def __str__(self) -> str:
        return f"{self.key} - {self.name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        validate_positive_duration(self.response_time)
        super().save(*args, **kwargs)


class Category(models.TextChoices):
    SERVICE_OUTAGE = "service_outage", "Service outage"
    DATABASE = "database", "Database"
    PAYMENT = "payment", "Payment processing"
    BANCA = "banca", "Banca integration"
    SECURITY = "security", "Security"
    OTHER = "other", "Other"


class Status(models.TextChoices):
    DECLARED = "declared", "Declared"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    INVESTIGATING = "investigating", "Investigating"
    MITIGATED = "mitigated", "Mitigated"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


OPEN_STATUSES = (Status.DECLARED, Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MITIGATED)

# Forward moves a responder may make with the "move to" buttons. Acknowledging
# and reopening have their own services (with their own rules).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    Status.DECLARED: (),
    Status.ACKNOWLEDGED: (Status.INVESTIGATING, Status.MITIGATED, Status.RESOLVED),
    Status.INVESTIGATING: (Status.MITIGATED, Status.RESOLVED),
    Status.MITIGATED: (Status.INVESTIGATING, Status.RESOLVED),
    Status.RESOLVED: (Status.CLOSED,),
    Status.CLOSED: (),
}
REOPENABLE = (Status.RESOLVED, Status.CLOSED)

# The field that records when an incident last entered each status.
STATUS_TIMESTAMP = {
    Status.DECLARED: "declared_at",
    Status.ACKNOWLEDGED: "acknowledged_at",
    Status.INVESTIGATING: "investigating_at",
    Status.MITIGATED: "mitigated_at",
    Status.RESOLVED: "resolved_at",
    Status.CLOSED: "closed_at",
}


def channel_name_for(title: str, when: datetime) -> str:
    """`#incident-YYYY-MM-DD-brief-description`, within Slack's 80-character limit."""
    prefix = f"incident-{timezone.localdate(when):%Y-%m-%d}-"
    brief = slugify(title)[: 80 - len(prefix)].strip("-") or "incident"
    return f"#{prefix}{brief}"


# Incident flags that escalation rules may name (each is a boolean field of Incident).
INCIDENT_FLAGS = ("security", "data_loss", "data_breach", "regulatory")
FLAG_LABELS = {
    "security": "Security",
    "data_loss": "Data loss",
    "data_breach": "Data breach",
    "regulatory": "Regulatory",
}


def validate_categories(value: Any) -> None:
    """A list of incident categories (the keys of `Category`), as contacts and
    runbooks store them: a typo would silently never match an incident."""
    if problem := list_problem(value, dict(Category.choices), "category"):
        raise ValidationError(problem, code="invalid_categories")


def validate_flags(value: Any) -> None:
    """A list of incident flags (`INCIDENT_FLAGS`): "databreach" would leave Legal
    untold of every data breach."""
    if problem := list_problem(value, FLAG_LABELS, "flag"):
        raise ValidationError(problem, code="invalid_flags")


@cache
def _incident_url_pattern() -> str:
    """The incident page's URL with a {} for the id, reversed once: dashboards and
    reports link every row, and reverse() costs a resolver walk each time."""
    return reverse("incidents:detail", args=[0]).replace("/0/", "/{}/")


class Incident(models.Model):
    title = models.CharField(max_length=200)
    category = models.CharField(max_length=20, choices=Category.choices)
    severity = models.ForeignKey(Severity, on_delete=models.PROTECT, related_name="incidents")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DECLARED)
    summary = models.TextField(blank=True)
    commander = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="commanded_incidents",
    )
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="declared_incidents",
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="acknowledged_incidents",
    )
    impacted_services = models.JSONField(default=list, blank=True)
    affected_users = models.PositiveIntegerField(null=True, blank=True)
    channel_name = models.CharField(max_length=81)
    restricted = models.BooleanField(
        default=False, help_text="Visible only to users granted access (security incidents)"
    )
    alert_fingerprint = models.CharField(max_length=200, blank=True, default="")
    # The runbook's escalation flags: setting one re-evaluates who must be told.
    security = models.BooleanField(default=False, help_text="Major security incident")
    data_loss = models.BooleanField(default=False)
    data_breach = models.BooleanField(default=False)
    regulatory = models.BooleanField(default=False, help_text="Regulatory issue")

    declared_at = models.DateTimeField(default=timezone.now)
    response_deadline = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    investigating_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    reopened_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-declared_at"]
        permissions = [
            ("view_restricted_incident", "Can view every restricted incident"),
            ("run_actions", "Can run runbook resolution actions"),
            # Granted on one incident (django-guardian); the global one is on
            # diagnostics.ActionApproval. Declared here so Django keeps it in place.
            ("approve_actions", "Can approve resolution actions"),
            (
                "override_recovery",
                "Can resolve an incident whose recovery checks have not passed (with a reason)",
            ),
            # Evidence files are database dumps and log exports: seeing the incident
            # is not enough to take a copy or to write a verification on its timeline.
            ("download_evidence", "Can download an incident's evidence files"),
            ("verify_evidence", "Can verify an incident's evidence files"),
        ]
        indexes = [
            models.Index(fields=["status", "-declared_at"], name="incident_status_declared"),
            models.Index(fields=["-resolved_at"], name="incident_resolved"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    def get_absolute_url(self) -> str:
        return _incident_url_pattern().format(self.pk)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def sla_breached(self, now: datetime | None = None) -> bool:
        """Acknowledged late, or still unacknowledged past the response deadline."""
        verdict = sla.verdict(self.acknowledged_at, self.response_deadline, now or timezone.now())
        return verdict == sla.BREACHED

    def time_to_acknowledge(self) -> timedelta | None:
        return self.acknowledged_at - self.declared_at if self.acknowledged_at else None

    def allowed_transitions(self) -> tuple[str, ...]:
        return TRANSITIONS.get(self.status, ())

    @property
    def flags(self) -> list[str]:
        return [flag for flag in INCIDENT_FLAGS if getattr(self, flag)]


class EscalationRole(models.TextChoices):
    ON_CALL = "on_call", "On-call engineer"
    TECH_LEAD = "tech_lead", "Tech lead"
    ENGINEERING_MANAGER = "engineering_manager", "Engineering manager"
    CTO = "cto", "CTO"
    LEGAL = "legal", "Legal/Compliance"


class EscalationContact(models.Model):
    """A person to tell, and the runbook's rule of when to escalate to them."""

    role = models.CharField(max_length=30, choices=EscalationRole.choices)
    name = models.CharField(max_length=120)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    phone = models.CharField(max_length=40, blank=True)
    email = models.EmailField(blank=True)
    slack_handle = models.CharField(max_length=80, blank=True)
    level = models.PositiveSmallIntegerField(
        default=1, help_text="Escalation order: 1 is told first, higher levels later"
    )
    when_to_escalate = models.CharField(max_length=200, help_text="The runbook's words")
    always = models.BooleanField(default=False, help_text="Told of every incident (first response)")
    severities = models.ManyToManyField(Severity, blank=True, related_name="contacts")
    categories = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_categories],
        help_text="Told of every incident of these categories (whatever its severity).",
    )
    flags = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_flags],
        help_text="Told when a responder sets one of these flags on an incident (at "
        "declaration or later), e.g. Legal for data breaches.",
    )
    extended_outage_after = models.DurationField(
        null=True,
        blank=True,
        validators=[validate_positive_duration],
        help_text="Told when an incident stays open longer than this; empty: never for "
        "that reason." + DURATION_HELP,
    )
    active = models.BooleanField(default=True)
    in_escalation_chain = models.BooleanField(
        default=True,
        help_text="Paged when an unacknowledged incident escalates up to this level "
        "(off for contacts told only by their own rule, such as legal)",
    )

    class Meta:
        ordering = ["level", "role", "name"]

    def __str__(self) -> str:
        return f"{self.get_role_display()}: {self.name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every path (admin, seed, shell, a bulk script) gets the same refusal as
        # the form: a contact whose rule can never match is worse than an error.
        validate_categories(self.categories)
        validate_flags(self.flags)
        validate_positive_duration(self.extended_outage_after)
        super().save(*args, **kwargs)


class ChecklistPhase(models.TextChoices):
    INITIAL = "initial", "Initial response"
    ASSESS = "assess", "Assess severity"
    COMMUNICATION = "communication", "Incident communication"
    POST_24H = "post_24h", "Within 24 hours"
    POST_3D = "post_3d", "Within 3 days"
    POST_1W = "post_1w", "Within 1 week"


class ChecklistTemplate(models.Model):
    """One list of the runbook (for example "Assess severity")."""

    phase = models.CharField(max_length=20, choices=ChecklistPhase.choices, unique=True)
    title = models.CharField(max_length=120)
    due_after = models.DurationField(
        null=True,
        blank=True,
        validators=[validate_positive_duration],
        help_text="Due this long after the phase starts (post-incident lists: after the "
        "resolution); empty: no due date." + DURATION_HELP,
    )
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return self.title


class ChecklistTemplateItem(models.Model):
    template = models.ForeignKey(ChecklistTemplate, on_delete=models.CASCADE, related_name="items")
    text = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["template__order", "order"]

    def __str__(self) -> str:
        return self.text


class ChecklistItem(models.Model):
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="checklist")
    phase = models.CharField(max_length=20, choices=ChecklistPhase.choices)
    text = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Set once, by the beat task that claims the item to send its reminder.
    reminded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["incident", "phase", "order", "pk"]
        indexes = [
            # The dashboard's overdue follow-ups and the reminder beat: open items by due time.
            models.Index(
                fields=["due_at"],
                condition=models.Q(done_at__isnull=True),
                name="checklist_open_due",
            )
        ]

    def __str__(self) -> str:
        return self.text

    @property
    def done(self) -> bool:
        return self.done_at is not None


class EventKind(models.TextChoices):
    DECLARED = "declared", "Declared"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    STATUS = "status", "Status change"
    REOPENED = "reopened", "Reopened"
    SEVERITY = "severity", "Severity change"
    COMMANDER = "commander", "Commander assigned"
    NOTE = "note", "Note"
    STATUS_UPDATE = "status_update", "Status update"
    CHECKLIST = "checklist", "Checklist"
    CHECK_RUN = "check_run", "Check run"
    CHECK_RESULT = "check_result", "Check result"
    ACTION = "action", "Action"
    ESCALATION = "escalation", "Escalation"
    NOTIFICATION = "notification", "Notification"
    EVIDENCE = "evidence", "Evidence"
    ALERT = "alert", "Alert"
    REGULATORY = "regulatory", "Regulatory clock"
    RECOVERY = "recovery", "Recovery"


class TimelineEventQuerySet(models.QuerySet["TimelineEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("Timeline events are append-only: add a correcting event instead")


class TimelineEvent(models.Model):
    """The append-only history of an incident. `seq` orders it within the incident and
    is the SSE event id: 1, 2, 3, ... assigned by `timeline.append_event` under the
    incident's row lock, so seq order is commit order (ids are not: a transaction can
    take id 500 and commit after the one that took 501)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    seq = models.PositiveIntegerField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    objects = TimelineEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["incident", "id"], name="timeline_incident_id")]
        constraints = [
            models.UniqueConstraint(fields=["incident", "seq"], name="timeline_incident_seq")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:60]}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise TypeError("Timeline events are append-only: add a correcting event instead")
        super().save(*args, **kwargs)

    @property
    def outcome(self) -> str:
        """A check result's outcome, shown in words and colour on the timeline: ok,
        warning, failing, error, timed_out (the run hit its hard timeout), or none;
        "" for every other kind of event."""
        if self.kind != EventKind.CHECK_RESULT:
            return ""
        if self.data.get("status") == "timed_out":
            return "timed_out"
        return str(self.data.get("outcome") or "none")


# --- on-call rota and notifications -------------------------------------------------


class Rotation(models.Model):
    """Who holds a role (the on-call engineer) when: members take turns, handing
    over at a local wall-clock time in the rotation's time zone."""

    name = models.CharField(max_length=120)
    role = models.CharField(
        max_length=30, choices=EscalationRole.choices, default=EscalationRole.ON_CALL
    )
    time_zone = models.CharField(
        max_length=64, default="America/Santo_Domingo", help_text="IANA name, e.g. Europe/Madrid"
    )
    start_date = models.DateField(help_text="Local date of the first handoff")
    handoff_time = models.TimeField(help_text="Local wall-clock time of every handoff")
    shift_days = models.PositiveSmallIntegerField(
        default=7, help_text="7 for a weekly rotation; any number of days for a custom one"
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["role", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.time_zone not in available_timezones():
            raise ValidationError({"time_zone": f"Unknown time zone {self.time_zone!r}."})
        if self.shift_days < 1:
            raise ValidationError({"shift_days": "A shift lasts at least one day."})


class RotationMember(models.Model):
    """One person of a rotation, in turn order."""

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="members")
    position = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=120)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    email = models.EmailField(blank=True)
    slack_handle = models.CharField(
        max_length=80, blank=True, help_text="Slack user id (U…) to DM and invite"
    )
    phone = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["rotation", "position", "pk"]

    def __str__(self) -> str:
        return self.name


class RotaOverride(models.Model):
    """A swap: `member` is on call from `starts_at` to `ends_at`, whatever the rota says."""

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="overrides")
    member = models.ForeignKey(RotationMember, on_delete=models.CASCADE, related_name="overrides")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["rotation", "starts_at"]

    def __str__(self) -> str:
        return f"{self.member} {self.starts_at:%Y-%m-%d %H:%M} → {self.ends_at:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError("An override ends after it starts.")
        if self.member_id and self.rotation_id and self.member.rotation_id != self.rotation_id:
            raise ValidationError({"member": "Choose a member of this rotation."})


class NotifyChannel(models.TextChoices):
    EMAIL = "email", "Email"
    SLACK = "slack", "Slack"
    WEBHOOK = "webhook", "Webhook"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    # The channel took it but it never left the machine (Django's console email
    # backend, say): not "sent", whatever the backend answered.
    NOT_DELIVERED = "undelivered", "Not delivered"
    FAILED = "failed", "Failed"
    NO_ADDRESS = "no_address", "No address"
    CANCELLED = "cancelled", "Cancelled"
    # A page about a restricted incident for someone who may not see it: never sent
    # (paging grants no access); `last_error` says why, for the commander.
    WITHHELD = "withheld", "Not told"


class Notification(models.Model):
    """One message to one recipient by one channel. The unique key makes creating it
    idempotent (two beat runs cannot page twice); the status is claimed with a
    conditional UPDATE before sending (two workers cannot send twice)."""

    PAGE = "page"
    UPDATE = "update"
    CHANNEL = "channel"  # the incident's own channel (Slack) or the webhook's stream
    REMINDER = "reminder"  # a post-incident checklist item came due
    REGULATORY = "regulatory"  # a regulatory clock's deadline is near or past

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notifications")
    contact = models.ForeignKey(EscalationContact, null=True, blank=True, on_delete=models.SET_NULL)
    recipient_key = models.CharField(
        max_length=40, help_text="contact:<id> or channel: who this is for, for the unique key"
    )
    recipient = models.CharField(max_length=160, help_text="Name (and role) as told")
    role = models.CharField(max_length=30, blank=True)
    channel = models.CharField(max_length=10, choices=NotifyChannel.choices)
    address = models.CharField(max_length=254, blank=True)
    reason = models.CharField(max_length=40, help_text="rule, escalation-<n>, update-<event id>…")
    why = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=10, default=PAGE)
    subject = models.CharField(max_length=200)
    text = models.TextField()
    status = models.CharField(
        max_length=12, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(default=timezone.now, help_text="Next attempt not before")
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "recipient_key", "channel", "reason"],
                name="notification_once",
            )
        ]
        indexes = [models.Index(fields=["status", "due_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.recipient} ({self.reason})"


# --- post-incident: post-mortem and action items -----------------------------------


POST_PHASES = (ChecklistPhase.POST_24H, ChecklistPhase.POST_3D, ChecklistPhase.POST_1W)


class PostMortem(models.Model):
    """The runbook's incident report template, one per incident. Date, duration and
    severity come from the incident itself; the rest is written here.

    `version` guards against lost updates: a save is a conditional UPDATE on the
    version the editor loaded, so of two people editing, the later save is refused
    (and shown both texts) instead of silently overwriting the earlier one."""

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="postmortem")
    title = models.CharField(max_length=200)
    author = models.CharField(max_length=150, blank=True)
    summary = models.TextField(blank=True)
    root_cause = models.TextField(blank=True)
    impact_users = models.TextField(blank=True)
    impact_revenue = models.TextField(blank=True)
    impact_data = models.TextField(blank=True)
    resolution = models.TextField(blank=True)
    lessons_learned = models.TextField(blank=True)
    # Ids of the timeline events shown in the report's Timeline section; kept in this
    # row so the picker is covered by the same version check as the text.
    timeline_event_ids = models.JSONField(default=list, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"Post-mortem of #{self.incident_id}"

    def get_absolute_url(self) -> str:
        return reverse("incidents:postmortem", args=[self.incident_id])


class ActionItemStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    VERIFIED = "verified", "Verified"


OPEN_ACTION_STATUSES = (ActionItemStatus.OPEN, ActionItemStatus.IN_PROGRESS)


class ActionItem(models.Model):
    """A follow-up from the post-mortem: who does what by when. Tied to a runbook
    step, it is verified by re-running that check (and only when it passes)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="action_items")
    text = models.CharField(max_length=300)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="action_items",
    )
    due_date = models.DateField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=ActionItemStatus.choices, default=ActionItemStatus.OPEN
    )
    step = models.ForeignKey(
        "diagnostics.RunbookStep",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="action_items",
        help_text="The check that proves this is fixed",
    )
    verification_run = models.ForeignKey(
        "diagnostics.CheckRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="verified_items",
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["incident", "due_date", "pk"]
        indexes = [models.Index(fields=["owner", "status", "due_date"], name="actionitem_owner")]

    def __str__(self) -> str:
        return self.text

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ACTION_STATUSES

    def is_overdue(self, today: Any = None) -> bool:
        today = today or timezone.localdate()
        return self.is_open and self.due_date is not None and self.due_date < today


class EvidenceFile(models.Model):
    """A file preserved as evidence (a database dump, a log export), kept under
    settings.EVIDENCE_ROOT with the SHA-256 and size it had when stored, so a
    later verification shows whether it changed. Rows are never edited; an
    incident with evidence cannot be deleted."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="evidence_files")
    name = models.CharField(max_length=200, help_text="File name shown and offered for download")
    path = models.CharField(
        max_length=500, unique=True, help_text="Where it is stored, relative to EVIDENCE_ROOT"
    )
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # The diagnostics CheckRun that produced it, as a plain id: incidents never
    # depends on diagnostics.
    check_run_id = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["incident", "id"]
        indexes = [models.Index(fields=["incident", "id"], name="evidence_incident_id")]

    def __str__(self) -> str:
        return self.name


class AuditEntry(models.Model):
    """What the timeline and Django admin's LogEntry do not already record, who did it
    and when: exports (Markdown, PDF, CSV, the audit trail itself) and grants made on
    the object-permission pages. Append-only; the audit trail merges the three."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Kept when the user is deleted")
    action = models.CharField(max_length=40, help_text="export, grant, …")
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    summary = models.CharField(max_length=300)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action}"


# --- impact: regulatory clocks and money at risk -----------------------------------


class RegulatoryClock(models.Model):
    """The deadline a flag starts (data breach: notify the data-protection authority
    within 72 h; settings.REGULATORY_CLOCKS), copied when it starts so a later change
    of the settings never moves a running clock. Escalated to Legal/Compliance until
    a responder records the notification as done."""

    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="regulatory_clocks"
    )
    flag = models.CharField(max_length=20)
    obligation = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    deadline = models.DateTimeField()
    warn_before = models.DurationField(default=timedelta(0))
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    done_note = models.CharField(max_length=500, blank=True)
    # The flag was cleared before the notification was done: the clock stops.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["incident", "deadline", "flag"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "flag"], name="regulatory_clock_once")
        ]
        indexes = [
            models.Index(
                fields=["deadline"],
                condition=models.Q(done_at__isnull=True, stopped_at__isnull=True),
                name="regulatory_clock_running",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.incident_id} {self.flag}: {self.obligation}"

    @property
    def running(self) -> bool:
        return self.done_at is None and self.stopped_at is None


class ImpactSample(models.Model):
    """One reading of the money at risk on a payment or banca incident: plays pending
    longer than the runbook's hour (`long`) and than a shorter window (`short`), with
    their amounts in integer minor units per currency, per banca and per Stripe
    state, and where the numbers came from (probe, step, target, when). Taken by a
    beat task while the incident is open, and once more when it is resolved (by a
    worker, after the resolution commits); the trend and the post-mortem's Impact
    section read them."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="impact_samples")
    taken_at = models.DateTimeField(default=timezone.now)
    # taken_at // the sampling interval: two beats in one interval store one sample.
    slot = models.BigIntegerField()
    # The reading taken when the incident was resolved: that resolution's resolved_at
    # (one per resolution; a periodic reading has none).
    for_resolution = models.DateTimeField(null=True, blank=True)
    probe = models.CharField(max_length=60)
    step_key = models.CharField(max_length=60, blank=True)
    target_name = models.CharField(max_length=80, blank=True)
    window_minutes = models.PositiveIntegerField(default=60)
    short_window_minutes = models.PositiveIntegerField(default=15)
    plays_long = models.PositiveIntegerField(default=0)
    plays_short = models.PositiveIntegerField(default=0)
    users_long = models.PositiveIntegerField(default=0)
    users_short = models.PositiveIntegerField(default=0)
    # {"USD": {"long": minor units, "short": minor units, "long_count": n, "short_count": n}}
    totals = models.JSONField(default=dict, blank=True)
    # [{"banca": ..., "currency": ..., "long": ..., "short": ..., "long_count", "short_count"}]
    by_banca = models.JSONField(default=list, blank=True)
    # the same per Stripe state ({"state": ...})
    by_state = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, help_text="Why this reading failed (no numbers)")

    class Meta:
        ordering = ["incident", "taken_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "slot"],
                condition=models.Q(for_resolution__isnull=True),
                name="impact_sample_slot",
            ),
            models.UniqueConstraint(
                fields=["incident", "for_resolution"], name="impact_sample_resolution"
            ),
        ]
        indexes = [models.Index(fields=["incident", "taken_at"], name="impact_incident_taken")]

    def __str__(self) -> str:
        return f"#{self.incident_id} at {self.taken_at:%Y-%m-%d %H:%M}"

    @property
    def ok(self) -> bool:
        return not self.error

    def long_totals(self) -> dict[str, int]:
        return {c: int(v.get("long", 0)) for c, v in self.totals.items()}

    def short_totals(self) -> dict[str, int]:
        return {c: int(v.get("short", 0)) for c, v in self.totals.items()}


class UserProfile(models.Model):
    """What a person chooses for themselves: the time zone every time is shown in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lotoops_profile"
    )
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        help_text="IANA name, e.g. America/Santo_Domingo; empty: the site's time zone",
    )

    def __str__(self) -> str:
        return f"Profile of {self.user}"

    def clean(self) -> None:
        if self.time_zone and self.time_zone not in available_timezones():
            raise ValidationError({"time_zone": f"Unknown time zone {self.time_zone!r}."})

    @staticmethod
    def zone_of(user: Any) -> str:
        """The zone `user` reads times in: theirs, else the site's TIME_ZONE."""
        if user is None or not getattr(user, "is_authenticated", False):
            return settings.TIME_ZONE
        chosen = (
            UserProfile.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first()
        )
        return chosen if chosen and chosen in _zones() else settings.TIME_ZONE


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())
