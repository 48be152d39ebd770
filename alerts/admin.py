from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from incidents.admin import IssuedTokenAdmin

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
class IngestTokenAdmin(IssuedTokenAdmin):
    list_display = ("name", "source", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "source", "prefix", "created_at", "last_used_at", "revoked_at")

    def issue(self, obj: IngestToken) -> tuple[IngestToken, str]:
        return tokens.issue(obj.name, obj.source)


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
