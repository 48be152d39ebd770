from __future__ import annotations

from typing import Any

from django import forms as djforms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import ForeignKey, QuerySet
from django.forms import ModelChoiceField
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from guardian.admin import GuardedModelAdmin

from . import audit, services, timeline
from .access import (
    can_change_restricted,
    can_manage_object_permissions,
    visible_condition,
    visible_incidents,
)
from .forms import ChoiceListField
from .models import (
    FLAG_LABELS,
    ActionItem,
    Category,
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
from .rules import escalation
from .rules.escalation import may_page_on_restricted


class IncidentScopedAdmin(admin.ModelAdmin):
    """The restricted-incident rule in Django admin: rows of incidents the user may
    not see are left out of lists, search, change and delete pages (a direct URL
    redirects to the admin index, "doesn't exist"), and cannot be chosen as the
    incident of a new row."""

    incident_path = "incident__"  # how the model reaches its incident ("" for Incident)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        condition = visible_condition(request.user, self.incident_path)
        return rows if condition is None else rows.filter(condition)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField | None:
        if db_field.related_model is Incident:
            kwargs["queryset"] = visible_incidents(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Severity)
class SeverityAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "response_time", "description", "order"]
    list_editable = ["order"]
    search_fields = ["key", "name", "description", "examples"]


class EscalationContactForm(djforms.ModelForm):
    """Categories and flags as checkboxes of the known values: a typo ("databreach")
    or a text where a list belongs cannot be saved (the model refuses it too)."""

    categories = ChoiceListField(
        known=dict(Category.choices),
        what="category",
        help_text=EscalationContact._meta.get_field("categories").help_text,
    )
    flags = ChoiceListField(
        known=FLAG_LABELS,
        what="flag",
        help_text=EscalationContact._meta.get_field("flags").help_text,
    )

    class Meta:
        model = EscalationContact
        fields = "__all__"  # noqa: DJ007 (the admin's fieldsets choose)

    request: HttpRequest | None = None  # set per request by the admin

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        user = data.get("user")
        if self.request is None or self.request.user.is_superuser or user is None:
            return data
        now_pages = may_page_on_restricted(_rule_of(data))
        before = self.instance.pk is not None and may_page_on_restricted(
            _rule_of(_contact_fields(self.instance))
        )
        if now_pages and ("user" in self.changed_data or not before):
            self.add_error("user", NAMING_A_USER_IS_FOR_SUPERUSERS)
        return data


NAMING_A_USER_IS_FOR_SUPERUSERS = (
    "Only a superuser may name the LotoOps user of a contact or rota member that could "
    "be paged about a security (restricted) incident: paging reaches only people who "
    "may already see it. Leave the user empty (name, email, phone and Slack are yours "
    "to edit) and ask a superuser."
)


def _contact_fields(contact: EscalationContact) -> dict[str, Any]:
    return {
        "always": contact.always,
        "severities": list(contact.severities.all()),
        "flags": contact.flags,
        "in_escalation_chain": contact.in_escalation_chain,
        "extended_outage_after": contact.extended_outage_after,
        "categories": contact.categories,
        "role": contact.role,
        "level": contact.level,
    }


def _rule_of(data: dict[str, Any]) -> escalation.ContactRule:
    return escalation.ContactRule(
        id=0,
        role=data.get("role") or "",
        level=data.get("level") or 0,
        always=bool(data.get("always")),
        severities=frozenset(str(s.pk) for s in data.get("severities") or ()),
        categories=frozenset(data.get("categories") or ()),
        flags=frozenset(data.get("flags") or ()),
        extended_outage_after=data.get("extended_outage_after"),
        in_chain=bool(data.get("in_escalation_chain")),
    )


def rotation_may_page_on_restricted(role: str) -> bool:
    """A rota member is paged as its rotation's role: whenever a contact of that role
    could be told of a restricted incident (or none exists yet to say otherwise)."""
    contacts = EscalationContact.objects.filter(role=role).prefetch_related("severities")
    return not contacts or any(
        may_page_on_restricted(_rule_of(_contact_fields(c))) for c in contacts
    )


@admin.register(EscalationContact)
class EscalationContactAdmin(admin.ModelAdmin):
    """Only superusers name the LotoOps user behind a contact that could be paged
    about a restricted incident (EscalationContactForm.clean)."""

    form = EscalationContactForm

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"request": request})

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
class IncidentAdmin(GuardedModelAdmin, IncidentScopedAdmin):
    """Working the incident is not an admin edit: its status, severity, commander,
    category and flags (security, data loss, data breach, regulatory) are read-only
    here and change only on the incident page, through the services that put them on
    the timeline and re-decide who is told. `restricted` changes only through
    `services.set_restricted` (on the timeline), by someone who may see the incident
    whatever its flag. What is left to edit (title, summary, impacted services,
    affected users) is a correction of the record, in Django admin's change log."""

    incident_path = ""

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
    readonly_fields = [
        "status",
        "severity",
        "commander",
        "category",
        "security",
        "data_loss",
        "data_breach",
        "regulatory",
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

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is None or not can_change_restricted(request.user, obj):
            fields.append("restricted")
        return fields

    def save_model(self, request: HttpRequest, obj: Incident, form: Any, change: bool) -> None:
        wanted = obj.restricted
        if change and "restricted" in form.changed_data:
            obj.restricted = not wanted  # the service makes the change, and audits it
        super().save_model(request, obj, form, change)
        if change and "restricted" in form.changed_data:
            if not can_change_restricted(request.user, obj):
                raise PermissionDenied("You may not change who sees this incident.")
            services.set_restricted(obj, wanted, actor=request.user)

    # The object-permission pages grant access to any incident: superusers (or the
    # dedicated guardian permissions) only, and only on incidents they may see.
    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        self._check_may_grant(request)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(
        self, request: HttpRequest, object_pk: str, user_id: str
    ) -> HttpResponse:
        self._check_may_grant(request)
        response = super().obj_perms_manage_user_view(request, object_pk, user_id)
        self._record_grant(request, response, object_pk, "user", user_id)
        return response

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: str
    ) -> HttpResponse:
        self._check_may_grant(request)
        response = super().obj_perms_manage_group_view(request, object_pk, group_id)
        self._record_grant(request, response, object_pk, "group", group_id)
        return response

    def _record_grant(
        self, request: HttpRequest, response: HttpResponse, object_pk: str, kind: str, who: str
    ) -> None:
        """A saved grant (the page redirects after saving) goes on the audit trail."""
        if request.method != "POST" or response.status_code != 302:
            return
        incident = Incident.objects.filter(pk=object_pk).first() if object_pk.isdigit() else None
        perms = sorted(request.POST.getlist("permissions"))
        audit.record(
            request.user,
            "grant",
            f"set {kind} {who}'s permissions on #{object_pk} to {', '.join(perms) or 'none'}",
            incident=incident,
            data={kind: who, "permissions": perms},
        )

    def _check_may_grant(self, request: HttpRequest) -> None:
        if not can_manage_object_permissions(request.user):
            raise PermissionDenied("Only administrators grant access to incidents.")


@admin.register(TimelineEvent)
class TimelineEventAdmin(IncidentScopedAdmin):
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


class RotationMemberFormSet(BaseInlineFormSet):
    """Only superusers name the LotoOps user of a member of a rotation whose role
    could be paged about a restricted incident (as for contacts)."""

    request: HttpRequest | None = None

    def clean(self) -> None:
        super().clean()
        if self.request is None or self.request.user.is_superuser:
            return
        rotation = self.instance
        if not rotation_may_page_on_restricted(rotation.role):
            return
        role_changed = rotation.pk is not None and (
            Rotation.objects.filter(pk=rotation.pk).values_list("role", flat=True).first()
            != rotation.role
        )
        for form in self.forms:
            data = getattr(form, "cleaned_data", {})
            if not data or data.get("DELETE") or data.get("user") is None:
                continue
            if "user" in form.changed_data or role_changed:
                form.add_error("user", NAMING_A_USER_IS_FOR_SUPERUSERS)


class RotationMemberInline(admin.TabularInline):
    model = RotationMember
    formset = RotationMemberFormSet
    extra = 1
    fields = ["position", "name", "user", "email", "slack_handle", "phone"]
    autocomplete_fields = ["user"]

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        return type(formset.__name__, (formset,), {"request": request})


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
class NotificationAdmin(IncidentScopedAdmin):
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
class PostMortemAdmin(IncidentScopedAdmin):
    list_display = ["incident", "title", "author", "version", "updated_at", "updated_by"]
    search_fields = ["title", "summary", "root_cause", "incident__title"]
    raw_id_fields = ["incident"]
    readonly_fields = ["version", "updated_at", "updated_by"]


@admin.register(ActionItem)
class ActionItemAdmin(IncidentScopedAdmin):
    list_display = ["text", "incident", "owner", "due_date", "status", "step", "verified_at"]
    list_filter = ["status"]
    search_fields = ["text", "incident__title"]
    raw_id_fields = ["incident"]
    # Reviewing an action item (open, done, verified) is working the incident: on the
    # incident page, through its service and timeline, a verification by a real check.
    readonly_fields = ["status", "verification_run", "verified_at"]


# --- bearer tokens (the API's, the webhook senders') ----------------------------------


class IssuedTokenAdmin(admin.ModelAdmin):
    """A token made in the admin is shown once, in a message, and stored hashed;
    the only change afterwards is revoking it. Subclasses say how a row is issued."""

    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = ("revoke",)

    def issue(self, obj: Any) -> tuple[Any, str]:
        """(the new row, the token itself) for the unsaved `obj` from the form."""
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = self.issue(obj)
        obj.pk, obj.token_hash, obj.prefix = row.pk, row.token_hash, row.prefix
        obj._state.adding = False
        messages.warning(
            request,
            f"The token {row} is {token} — copy it now: it is stored hashed and "
            "cannot be shown again.",
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
