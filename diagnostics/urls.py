from django.urls import path, register_converter

from . import views

app_name = "diagnostics"


class StepKeyConverter:
    """A runbook step's key ("db.locks", "sec.db_snapshot"): anything else (a NUL
    byte, a slash) is no step, so 404 before a query is made."""

    regex = r"[A-Za-z0-9_.-]{1,80}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(StepKeyConverter, "stepkey")

# Mounted under incidents/<int:pk>/ (every view gets the incident's pk).
urlpatterns = [
    path("steps/<stepkey:key>/run/", views.run_step, name="run_step"),
    path("steps/<stepkey:key>/action/", views.action, name="action"),
    path("runbooks/<slug:key>/run-all/", views.run_all, name="run_all"),
    path("runbooks/<slug:key>/", views.procedure, name="procedure"),
    path(
        "approvals/<int:approval_pk>/approve/",
        views.decide_approval,
        {"decision": "approve"},
        name="approve",
    ),
    path(
        "approvals/<int:approval_pk>/reject/",
        views.decide_approval,
        {"decision": "reject"},
        name="reject",
    ),
    path("recovery/override/", views.recovery_override, name="recovery_override"),
    path("runs/<int:run_pk>/output.txt", views.run_output, name="run_output"),
    path(
        "action-items/<int:item_pk>/verify/",
        views.action_item_verify,
        name="action_item_verify",
    ),
]
