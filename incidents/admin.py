from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from guardian.admin import GuardedModelAdmin

from . import timeline
from .models import (
    ActionItem,
    ChecklistItem,
    ChecklistTemplate,
    ChecklistTemplateItem,
    EscalationContact,
    Incident,
    Notification,
    PostMortem,
    RotaOverride,
    Rotation,
    RotationMember,
    Severity,
    TimelineEvent,
)
from .paging import oncall


@admin.register(Severity)
class SeverityAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "response_time", "description", "order"]
    list_editable = ["order"]
    search_fields = ["key", "name", "description", "examples"]


@admin.register(EscalationContact)
class EscalationContactAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "role",
        "level",
        "when_to_escalate",
        "phone",
        "email",
        "slack_handle",
        "active",
        "in_escalation_chain",
    ]
    list_filter = ["role", "active", "severities"]
    search_fields = ["name", "email", "phone", "slack_handle", "when_to_escalate"]
    filter_horizontal = ["severities"]
    autocomplete_fields = ["user"]


class ChecklistTemplateItemInline(admin.TabularInline):
    model = ChecklistTemplateItem
    extra = 1


@admin.register(ChecklistTemplate)
class ChecklistTemplateAdmin(admin.ModelAdmin):
    list_display = ["title", "phase", "due_after", "order"]
    inlines = [ChecklistTemplateItemInline]


class TimelineEventInline(admin.TabularInline):
    """Read-only: the timeline is append-only (add a note from the incident page)."""

    model = TimelineEvent
    extra = 0
    fields = ["created_at", "kind", "actor", "message"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-id"]
    max_num = 0

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("actor")


class ChecklistItemInline(admin.TabularInline):
    model = ChecklistItem
    extra = 0
    fields = ["phase", "text", "due_at", "done_at", "done_by"]
    readonly_fields = ["done_at", "done_by"]


@admin.register(Incident)
class IncidentAdmin(GuardedModelAdmin):
    """Status and timestamps change only through the incident page's services."""

    list_display = [
        "id",
        "title",
        "severity",
        "category",
        "status",
        "commander",
        "declared_at",
        "acknowledged_at",
        "resolved_at",
        "restricted",
    ]
    list_filter = ["status", "severity", "category", "restricted", "security", "data_breach"]
    search_fields = ["title", "summary", "channel_name", "alert_fingerprint"]
    date_hierarchy = "declared_at"
    list_select_related = ["severity", "commander"]
    autocomplete_fields = ["commander"]
    readonly_fields = [
        "status",
        "severity",
        "declared_by",
        "acknowledged_by",
        "channel_name",
        "declared_at",
        "response_deadline",
        "acknowledged_at",
        "investigating_at",
        "mitigated_at",
        "resolved_at",
        "closed_at",
        "reopened_at",
        "updated_at",
    ]
    inlines = [ChecklistItemInline, TimelineEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # declare from the dashboard: it starts the SLA clock and checklists


@admin.register(TimelineEvent)
class TimelineEventAdmin(admin.ModelAdmin):
    list_display = ["id", "incident", "created_at", "kind", "actor", "message"]
    list_filter = ["kind"]
    search_fields = ["message"]
    list_select_related = ["incident", "actor"]
    raw_id_fields = ["incident", "actor"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # New events (corrections) may be added here; existing ones never change.
        return ["incident", "created_at", "kind", "actor", "message", "data"] if obj else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: TimelineEvent, form: Any, change: bool) -> None:
        if not change:  # through the one timeline writer, which wakes the live streams
            event = timeline.append_event(
                obj.incident, obj.kind, obj.message, actor=request.user, data=obj.data
            )
            obj.pk, obj.actor, obj.created_at = event.pk, event.actor, event.created_at


# --- on-call rota and notifications ---------------------------------------------------


class RotationMemberInline(admin.TabularInline):
    model = RotationMember
    extra = 1
    fields = ["position", "name", "user", "email", "slack_handle", "phone"]
    autocomplete_fields = ["user"]


class RotaOverrideInline(admin.TabularInline):
    model = RotaOverride
    extra = 0
    fields = ["member", "starts_at", "ends_at", "reason"]


@admin.register(Rotation)
class RotationAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "time_zone", "handoff_time", "shift_days", "on_call_now"]
    list_filter = ["role", "active"]
    inlines = [RotationMemberInline, RotaOverrideInline]

    @admin.display(description="On call now")
    def on_call_now(self, obj: Rotation) -> str:
        member = oncall.on_call_in(obj, timezone.now())[0]
        return member.name if member else "—"


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Read-only: notifications are made by escalation and delivered by the workers."""

    list_display = [
        "id",
        "incident",
        "recipient",
        "channel",
        "reason",
        "status",
        "attempts",
        "created_at",
        "sent_at",
    ]
    list_filter = ["status", "channel", "kind"]
    search_fields = ["recipient", "address", "reason", "last_error"]
    list_select_related = ["incident"]
    raw_id_fields = ["incident", "contact"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- post-incident ------------------------------------------------------------------


@admin.register(PostMortem)
class PostMortemAdmin(admin.ModelAdmin):
    list_display = ["incident", "title", "author", "version", "updated_at", "updated_by"]
    search_fields = ["title", "summary", "root_cause", "incident__title"]
    raw_id_fields = ["incident"]
    readonly_fields = ["version", "updated_at", "updated_by"]


@admin.register(ActionItem)
class ActionItemAdmin(admin.ModelAdmin):
    list_display = ["text", "incident", "owner", "due_date", "status", "step", "verified_at"]
    list_filter = ["status"]
    search_fields = ["text", "incident__title"]
    raw_id_fields = ["incident", "verification_run"]
    readonly_fields = ["verified_at"]
