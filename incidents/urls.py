from django.urls import path

from .views import (
    acklinks,
    audit,
    dashboard,
    evidence,
    incident,
    postmortem,
    profile,
    reports,
    stream,
)

app_name = "incidents"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/stream/", stream.dashboard_stream, name="dashboard_stream"),
    path("incidents/declare/", dashboard.declare, name="declare"),
    path("incidents/channel-name/", dashboard.channel_preview, name="channel_preview"),
    path("incidents/<int:pk>/", incident.detail, name="detail"),
    path("incidents/<int:pk>/timeline/", incident.timeline_page, name="timeline_page"),
    path("incidents/<int:pk>/stream/", stream.stream, name="stream"),
    path("incidents/<int:pk>/acknowledge/", incident.acknowledge, name="acknowledge"),
    path("incidents/<int:pk>/transition/", incident.transition, name="transition"),
    path("incidents/<int:pk>/reopen/", incident.reopen, name="reopen"),
    path("incidents/<int:pk>/severity/", incident.change_severity, name="severity"),
    path("incidents/<int:pk>/commander/", incident.assign_commander, name="commander"),
    path("incidents/<int:pk>/notes/", incident.add_note, name="note"),
    path("incidents/<int:pk>/milestones/", incident.milestone, name="milestone"),
    path("incidents/<int:pk>/status-updates/", incident.status_update, name="status_update"),
    path(
        "incidents/<int:pk>/checklist/<int:item_pk>/",
        incident.checklist_item,
        name="checklist_item",
    ),
    path("incidents/<int:pk>/flags/", incident.set_flags, name="flags"),
    path("incidents/<int:pk>/told/", incident.whos_told, name="whos_told"),
    path(
        "incidents/<int:pk>/regulatory/<slug:flag>/done/",
        incident.regulatory_done,
        name="regulatory_done",
    ),
    path("ack/<str:token>/", acklinks.ack_link, name="ack_link"),
    path(
        "incidents/<int:pk>/evidence/<int:file_pk>/",
        evidence.download,
        name="evidence_download",
    ),
    path("incidents/<int:pk>/evidence/verify/", evidence.verify, name="evidence_verify"),
    # post-incident: post-mortem, action items, exports, reports
    path("incidents/<int:pk>/postmortem/", postmortem.postmortem, name="postmortem"),
    path(
        "incidents/<int:pk>/postmortem/start/",
        postmortem.postmortem_start,
        name="postmortem_start",
    ),
    path(
        "incidents/<int:pk>/postmortem/timeline/",
        postmortem.postmortem_timeline,
        name="postmortem_timeline",
    ),
    path(
        "incidents/<int:pk>/postmortem/<slug:section>/",
        postmortem.postmortem_section,
        name="postmortem_section",
    ),
    path(
        "incidents/<int:pk>/action-items/",
        postmortem.action_item_add,
        name="action_item_add",
    ),
    path(
        "incidents/<int:pk>/action-items/<int:item_pk>/",
        postmortem.action_item,
        name="action_item",
    ),
    path("incidents/<int:pk>/report.md", reports.export_markdown, name="export_md"),
    path("incidents/<int:pk>/report.pdf", reports.export_pdf, name="export_pdf"),
    path("action-items/", postmortem.action_items, name="action_items"),
    path("reports/", reports.reports_page, name="reports"),
    path("reports/export.csv", reports.reports_csv, name="reports_csv"),
    path("reports/export.pdf", reports.reports_pdf, name="reports_pdf"),
    path("profile/", profile.profile, name="profile"),
    path("audit/", audit.audit_page, name="audit"),
    path("audit/export.csv", audit.audit_csv, name="audit_csv"),
]
