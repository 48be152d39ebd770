from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from incidents.access import visible_condition
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


class IncidentScopedReadOnly(ReadOnly):
    """The restricted-incident rule, as incidents/admin.py's IncidentScopedAdmin: rows
    tied (through any of `incident_paths`) to an incident the user may not see are
    left out of lists, search and change pages. A row tied to no incident is shown."""

    incident_paths: tuple[str, ...] = ("incident__",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        for path in self.incident_paths:
            condition = visible_condition(request.user, path)
            if condition is not None:
                rows = rows.filter(Q(**{f"{path}isnull": True}) | condition)
        return rows


@admin.register(AlertGroup)
class AlertGroupAdmin(IncidentScopedReadOnly):
    list_display = ("group_key", "receiver", "incident", "created_at")


@admin.register(Alert)
class AlertAdmin(IncidentScopedReadOnly):
    """An alert's labels and annotations describe its incident: scoped by the alert's
    own incident and its group's."""

    incident_paths = ("incident__", "group__incident__")
    list_display = ("name", "fingerprint", "starts_at", "resolved_at", "incident")
    search_fields = ("name", "fingerprint")


@admin.register(Delivery)
class DeliveryAdmin(IncidentScopedReadOnly):
    incident_paths = ("group__incident__",)
    list_display = ("received_at", "group", "status", "alerts", "truncated_alerts", "new_alerts")


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnly):
    list_display = ("event_id", "type", "created", "received_at", "failure")
    list_filter = ("failure", "type")
