from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import tokens
from .models import (
    Alert,
    AlertGroup,
    AutoRun,
    CategoryRule,
    Delivery,
    IngestToken,
    SeverityRule,
    StripeEvent,
)


@admin.register(IngestToken)
class IngestTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "source", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = ("revoke",)

    def save_model(self, request: HttpRequest, obj: IngestToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = tokens.issue(obj.name, obj.source)
        obj.pk, obj.token_hash, obj.prefix = row.pk, row.token_hash, row.prefix
        obj._state.adding = False
        messages.warning(
            request,
            f"The token for {row.name} is {token} — copy it now: it is stored hashed and "
            "cannot be shown again.",
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[IngestToken]) -> None:
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@admin.register(SeverityRule)
class SeverityRuleAdmin(admin.ModelAdmin):
    list_display = ("order", "label", "value", "severity", "may_declare")
    list_editable = ("may_declare",)


@admin.register(CategoryRule)
class CategoryRuleAdmin(admin.ModelAdmin):
    list_display = ("order", "__str__", "category", "may_declare", "mitigate_on_resolve")


@admin.register(AutoRun)
class AutoRunAdmin(admin.ModelAdmin):
    list_display = ("category", "runbook", "enabled")
    list_filter = ("category",)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AlertGroup)
class AlertGroupAdmin(ReadOnly):
    list_display = ("group_key", "receiver", "incident", "created_at")


@admin.register(Alert)
class AlertAdmin(ReadOnly):
    list_display = ("name", "fingerprint", "starts_at", "resolved_at", "incident")
    search_fields = ("name", "fingerprint")


@admin.register(Delivery)
class DeliveryAdmin(ReadOnly):
    list_display = ("received_at", "group", "status", "alerts", "truncated_alerts", "new_alerts")


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnly):
    list_display = ("event_id", "type", "created", "received_at", "failure")
    list_filter = ("failure", "type")
