"""Forms for every action on the incident page: each validates, none saves.

The services do the saving (and refuse what the incident's state forbids). Lengths
and ranges are the API's (incidents.rules.inbound); Django's CharField refuses NUL.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model

from .models import (
    FLAG_LABELS,
    ActionItem,
    ActionItemStatus,
    Category,
    Severity,
    Status,
)
from .rules import inbound

FLAG_CHOICES = list(FLAG_LABELS.items())


class ChoiceListField(forms.MultipleChoiceField):
    """A JSON list of known keys edited as checkboxes (admin: contacts' categories and
    flags, steps' evidence keys). Anything else posted is refused with the known
    values named, never stored."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, *, known: dict[str, str], what: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        names = ", ".join(known)
        whats = what[:-1] + "ies" if what.endswith("y") else what + "s"
        kwargs.setdefault(
            "error_messages",
            {
                "invalid_choice": f"“%(value)s” is not a known {what}: choose from {names}.",
                "invalid_list": f"Tick the {whats}: a list is expected, not a text.",
            },
        )
        super().__init__(choices=list(known.items()), **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, list | tuple) else []


class ServicesField(forms.CharField):
    """Comma-separated service names, as a list: at most MAX_SERVICES names of at most
    MAX_SERVICE characters each (the API's limits), no NUL."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", inbound.MAX_SERVICES * (inbound.MAX_SERVICE + 2))
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]

    def validate(self, value: Any) -> None:
        super().validate(value)
        if len(value) > inbound.MAX_SERVICES:
            raise forms.ValidationError(f"Name at most {inbound.MAX_SERVICES} services.")
        for name in value:
            if len(name) > inbound.MAX_SERVICE:
                raise forms.ValidationError(
                    f"A service's name has at most {inbound.MAX_SERVICE} characters "
                    f"({name[:20]}… has {len(name)})."
                )

    def run_validators(self, value: Any) -> None:
        # Each name, not the list's repr (which would hide a NUL as "\\x00").
        for name in value or []:
            super().run_validators(name)


class DeclareForm(forms.Form):
    title = forms.CharField(
        max_length=inbound.MAX_TITLE, help_text="Brief description: it names the channel"
    )
    category = forms.ChoiceField(choices=Category.choices)
    severity = forms.ModelChoiceField(queryset=Severity.objects.all(), empty_label="Choose…")
    summary = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=inbound.MAX_SUMMARY
    )
    impacted_services = ServicesField(
        required=False, help_text="Comma-separated, e.g. lotolink-backend, stripe"
    )
    # The column's range (PostgreSQL integer): a larger number is refused, not a 500.
    affected_users = forms.IntegerField(
        min_value=0, max_value=inbound.INT32_MAX, required=False, help_text="Estimate"
    )
    flags = forms.MultipleChoiceField(
        choices=FLAG_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Escalation flags: who must be told follows them",
    )

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not any(ch.isalnum() for ch in title):
            raise forms.ValidationError("The title needs at least one letter or digit.")
        return title


class TransitionForm(forms.Form):
    status = forms.ChoiceField(choices=Status.choices)
    note = forms.CharField(max_length=inbound.MAX_REASON, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=inbound.MAX_REASON)


class SeverityForm(forms.Form):
    severity = forms.ModelChoiceField(queryset=Severity.objects.all(), empty_label=None)
    reason = forms.CharField(max_length=inbound.MAX_REASON)


class CommanderForm(forms.Form):
    commander = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        empty_label=None,
    )


class NotifiedForm(forms.Form):
    note = forms.CharField(max_length=500, label="How the authority was notified")


class TextForm(forms.Form):
    text = forms.CharField(max_length=inbound.MAX_TEXT, widget=forms.Textarea(attrs={"rows": 2}))


class ChecklistForm(forms.Form):
    done = forms.BooleanField(required=False)


class DashboardFilterForm(forms.Form):
    severity = forms.ModelChoiceField(
        queryset=Severity.objects.all(), required=False, empty_label="any"
    )
    status = forms.ChoiceField(choices=[("", "any open"), *list(Status.choices)], required=False)
    category = forms.ChoiceField(choices=[("", "any"), *list(Category.choices)], required=False)


class FlagsForm(forms.Form):
    flags = forms.MultipleChoiceField(
        choices=FLAG_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )


# --- post-incident: action items and the period report ------------------------------


def _active_users() -> Any:
    return get_user_model().objects.filter(is_active=True).order_by("username")


class ActionItemForm(forms.Form):
    text = forms.CharField(max_length=inbound.MAX_ACTION_ITEM, label="Item")
    owner = forms.ModelChoiceField(queryset=_active_users(), required=False, empty_label="nobody")
    due_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    step = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="no check",
        label="Verified by",
        help_text="A runbook check that proves it is fixed",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = _active_users()
        # The runbook's steps, through the model's relation (incidents never imports
        # diagnostics): only diagnostics (read-only checks) can verify an item.
        steps = ActionItem._meta.get_field("step").related_model
        self.fields["step"].queryset = steps.objects.filter(kind="diagnostic")


class ActionItemUpdateForm(forms.Form):
    status = forms.ChoiceField(choices=ActionItemStatus.choices)
    owner = forms.ModelChoiceField(queryset=_active_users(), required=False)
    due_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


class ActionItemFilterForm(forms.Form):
    mine = forms.BooleanField(required=False, label="Mine only")
    overdue = forms.BooleanField(required=False, label="Overdue only")
    open = forms.BooleanField(required=False, label="Open only")


class ReportForm(forms.Form):
    """The period: incidents declared from `start` to `end`, both days included."""

    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="To")
    severity = forms.ModelChoiceField(
        queryset=Severity.objects.all(), required=False, empty_label="any"
    )
    category = forms.ChoiceField(choices=[("", "any"), *list(Category.choices)], required=False)

    MAX_DAYS = 3 * 366
    # Far enough for any real report, and far from the calendar's ends (a period's
    # last day plus one must still be a date).
    EARLIEST, LATEST = date(2000, 1, 1), date(2999, 12, 31)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        for day in (start, end):
            if day and not self.EARLIEST <= day <= self.LATEST:
                raise forms.ValidationError(
                    f"Choose dates between {self.EARLIEST:%Y-%m-%d} and {self.LATEST:%Y-%m-%d}."
                )
        if start and end:
            if end < start:
                raise forms.ValidationError(
                    f"The period ends ({end:%Y-%m-%d}) before it starts ({start:%Y-%m-%d}): "
                    "swap the dates."
                )
            if (end - start).days > self.MAX_DAYS:
                raise forms.ValidationError("Choose a period of at most three years.")
        return data


class AuditForm(forms.Form):
    """The audit trail's period: from `start` to `end`, both days included."""

    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="To")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        for day in (start, end):
            if day and not ReportForm.EARLIEST <= day <= ReportForm.LATEST:
                raise forms.ValidationError(
                    f"Choose dates between {ReportForm.EARLIEST:%Y-%m-%d} and "
                    f"{ReportForm.LATEST:%Y-%m-%d}."
                )
        if start and end and end < start:
            raise forms.ValidationError("The period ends before it starts: swap the dates.")
        return data


class ProfileForm(forms.Form):
    """The viewer's own settings: the time zone every time is shown in."""

    time_zone = forms.ChoiceField(
        required=False,
        label="Time zone",
        help_text="Every time on the pages is shown in this zone, with its label "
        "(rota times stay in the rota's own zone).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zones = sorted(z for z in available_timezones() if "/" in z or z == "UTC")
        self.fields["time_zone"].choices = [
            ("", f"The site's time zone ({settings.TIME_ZONE})"),
            *((zone, zone.replace("_", " ")) for zone in zones),
        ]
