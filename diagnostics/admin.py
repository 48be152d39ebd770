from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from incidents.access import visible_condition
from incidents.forms import ChoiceListField
from incidents.models import Category

from .models import (
    ActionApproval,
    CheckRun,
    RecoveryVerification,
    Runbook,
    RunbookStep,
    Target,
    WorkerHeartbeat,
    known_evidence,
    secret_values,
)
from .probes.base import get_probe


class TargetForm(forms.ModelForm):
    """Who edits a target chooses where its secret is sent: only superusers name a
    secret (`secret_env`, read-only for everyone else) or change the options that
    name environment variables (`*_env`, e.g. a Stripe target's webhook_secret_env)."""

    superuser = True

    class Meta:
        model = Target
        fields = "__all__"  # noqa: DJ007

    def clean_options(self) -> Any:
        options = self.cleaned_data.get("options")
        if self.superuser:
            return options
        before = self.instance.options if isinstance(self.instance.options, dict) else {}
        after = options if isinstance(options, dict) else {}
        changed = sorted(
            key
            for key in {*before, *after}
            if key.endswith("_env") and before.get(key) != after.get(key)
        )
        if changed:
            raise forms.ValidationError(
                f"Only a superuser may set or change {', '.join(changed)}: "
                "an option naming an environment variable names a secret."
            )
        return options


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Targets' secrets are bound to where they point (Target.save): a change of
    address by anyone clears the binding; only superusers bind one."""

    form = TargetForm
    list_display = ["name", "kind", "url", "secret_env", "active"]
    list_filter = ["kind", "active"]
    search_fields = ["name", "url"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["secret_bound_to"]
        if not request.user.is_superuser:
            fields.insert(0, "secret_env")
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"superuser": request.user.is_superuser})

    @admin.display(description="Secret bound to")
    def secret_bound_to(self, obj: Target | None) -> str:
        if obj is None or not obj.named_secrets():
            return "-"
        return ", ".join(obj.secret_hosts or []) or "-"

    def save_model(self, request: HttpRequest, obj: Target, form: Any, change: bool) -> None:
        had = obj.named_secrets()
        obj.save(rebind=request.user.is_superuser)
        if had and not obj.named_secrets():
            messages.warning(
                request,
                f"Target {obj.name} now points elsewhere: its secret binding ({', '.join(had)}) "
                "was cleared. A superuser must bind a secret to it again.",
            )


class RunbookStepInline(admin.TabularInline):
    model = RunbookStep
    extra = 0
    fields = ["order", "key", "title", "kind", "probe", "target_kind"]
    show_change_link = True


class RunbookForm(forms.ModelForm):
    categories = ChoiceListField(
        known=dict(Category.choices),
        what="category",
        help_text=Runbook._meta.get_field("categories").help_text,
    )

    class Meta:
        model = Runbook
        fields = "__all__"  # noqa: DJ007


class RunbookStepForm(forms.ModelForm):
    """`finds` and `recommended_by` as checkboxes of the evidence keys the probes can
    report (and those the steps' parameters name): never a free-typed key that no
    check will ever find. Only superusers set or change a parameter that names a
    secret or says where one is sent (the probe's `secret_params`)."""

    superuser = True

    class Meta:
        model = RunbookStep
        fields = "__all__"  # noqa: DJ007

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.instance.params if isinstance(self.instance.params, dict) else {}
        own = params.get("evidence")
        known = known_evidence((own,) if isinstance(own, str) and own else ())
        for name in ("finds", "recommended_by"):
            self.fields[name] = ChoiceListField(
                known=known,
                what="evidence key",
                help_text=RunbookStep._meta.get_field(name).help_text,
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.superuser:
            return cleaned
        before = secret_values(get_probe(self.instance.probe or ""), self.instance.params)
        after = secret_values(get_probe(cleaned.get("probe") or ""), cleaned.get("params"))
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        if changed:
            self.add_error(
                "params",
                f"Only a superuser may set or change {', '.join(changed)}: these parameters "
                "name a secret or where one is sent.",
            )
        return cleaned


@admin.register(Runbook)
class RunbookAdmin(admin.ModelAdmin):
    """`recovery_checks` is validated on save (Runbook.clean): every key must name
    an existing, runnable diagnostic step."""

    form = RunbookForm
    list_display = ["section", "title", "key", "order", "recovery_checks"]
    inlines = [RunbookStepInline]


@admin.register(RunbookStep)
class RunbookStepAdmin(admin.ModelAdmin):
    form = RunbookStepForm
    list_display = [
        "key",
        "title",
        "runbook",
        "kind",
        "probe",
        "target_kind",
        "requires_approval",
        "available",
    ]
    list_filter = ["runbook", "kind", "target_kind", "requires_approval"]
    search_fields = ["key", "title", "probe", "command"]
    readonly_fields = ["secret_bound_to"]

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"superuser": request.user.is_superuser})

    @admin.display(boolean=True)
    def available(self, obj: RunbookStep) -> bool:
        return obj.available

    @admin.display(description="Secret bound to")
    def secret_bound_to(self, obj: RunbookStep | None) -> str:
        binding = obj.secret_binding if obj is not None else {}
        if not binding:
            return "-"
        named = ", ".join(f"{env} ({name})" for name, env in binding.get("secrets", {}).items())
        where = ", ".join(binding.get("to") or []) or "-"
        return f"{where}: {named}" if named else where

    def save_model(self, request: HttpRequest, obj: RunbookStep, form: Any, change: bool) -> None:
        # Only a superuser's save binds (the form refuses anyone else's change of a
        # secret parameter); a row changed around the admin stays refused until then.
        obj.save(rebind=request.user.is_superuser)


@admin.register(CheckRun)
class CheckRunAdmin(admin.ModelAdmin):
    """Read-only: runs are made from the incident page and by the workers."""

    list_display = [
        "id",
        "incident",
        "step",
        "target_name",
        "status",
        "outcome",
        "requested_by",
        "queued_at",
        "finished_at",
    ]
    list_filter = ["status", "outcome", "step__runbook"]
    search_fields = ["summary", "step__key", "target_name"]
    list_select_related = ["incident", "step", "requested_by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CheckRun]:
        # Runs of restricted incidents the user may not see stay out of every page.
        runs = super().get_queryset(request)
        condition = visible_condition(request.user, "incident__")
        return runs if condition is None else runs.filter(condition)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "seen_at"]
    readonly_fields = ["hostname", "seen_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # workers write their own heartbeats (an empty form was a 500)


@admin.register(ActionApproval)
class ActionApprovalAdmin(admin.ModelAdmin):
    """Read-only: requests are made, approved and rejected from the incident page."""

    list_display = ["id", "incident", "step", "target_name", "status", "requested_by", "decided_by"]
    list_filter = ["status"]
    list_select_related = ["incident", "step", "requested_by", "decided_by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ActionApproval]:
        # Restricted incidents stay hidden from staff who may not see them.
        approvals = super().get_queryset(request)
        condition = visible_condition(request.user, "incident__")
        return approvals if condition is None else approvals.filter(condition)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RecoveryVerification)
class RecoveryVerificationAdmin(admin.ModelAdmin):
    """Read-only: verifications start from "Mark resolved" and move by their checks."""

    list_display = ["id", "incident", "state", "round", "requested_by", "started_at", "resolved_at"]
    list_filter = ["state"]
    list_select_related = ["incident", "requested_by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RecoveryVerification]:
        # Restricted incidents stay hidden from staff who may not see them.
        rows = super().get_queryset(request)
        condition = visible_condition(request.user, "incident__")
        return rows if condition is None else rows.filter(condition)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
