from django.urls import path

from . import views, views_evidence, views_postincident

app_name = "incidents"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("incidents/declare/", views.declare, name="declare"),
    path("incidents/channel-name/", views.channel_preview, name="channel_preview"),
    path("incidents/<int:pk>/", views.detail, name="detail"),
    path("incidents/<int:pk>/timeline/", views.timeline_page, name="timeline_page"),
    path("incidents/<int:pk>/stream/", views.stream, name="stream"),
    path("incidents/<int:pk>/acknowledge/", views.acknowledge, name="acknowledge"),
    path("incidents/<int:pk>/transition/", views.transition, name="transition"),
    path("incidents/<int:pk>/reopen/", views.reopen, name="reopen"),
    path("incidents/<int:pk>/severity/", views.change_severity, name="severity"),
    path("incidents/<int:pk>/commander/", views.assign_commander, name="commander"),
    path("incidents/<int:pk>/notes/", views.add_note, name="note"),
    path("incidents/<int:pk>/status-updates/", views.status_update, name="status_update"),
    path(
        "incidents/<int:pk>/checklist/<int:item_pk>/",
        views.checklist_item,
        name="checklist_item",
    ),
    path("incidents/<int:pk>/flags/", views.set_flags, name="flags"),
    path("incidents/<int:pk>/told/", views.whos_told, name="whos_told"),
    path("ack/<str:token>/", views.ack_link, name="ack_link"),
    path(
        "incidents/<int:pk>/evidence/<int:file_pk>/",
        views_evidence.download,
        name="evidence_download",
    ),
    path("incidents/<int:pk>/evidence/verify/", views_evidence.verify, name="evidence_verify"),
    # post-incident: post-mortem, action items, exports, reports
    path("incidents/<int:pk>/postmortem/", views_postincident.postmortem, name="postmortem"),
    path(
        "incidents/<int:pk>/postmortem/start/",
        views_postincident.postmortem_start,
        name="postmortem_start",
    ),
    path(
        "incidents/<int:pk>/postmortem/timeline/",
        views_postincident.postmortem_timeline,
        name="postmortem_timeline",
    ),
    path(
        "incidents/<int:pk>/postmortem/<slug:section>/",
        views_postincident.postmortem_section,
        name="postmortem_section",
    ),
    path(
        "incidents/<int:pk>/action-items/",
        views_postincident.action_item_add,
        name="action_item_add",
    ),
    path(
        "incidents/<int:pk>/action-items/<int:item_pk>/",
        views_postincident.action_item,
        name="action_item",
    ),
    path(
        "incidents/<int:pk>/action-items/<int:item_pk>/verify/",
        views_postincident.action_item_verify,
        name="action_item_verify",
    ),
    path("incidents/<int:pk>/report.md", views_postincident.export_markdown, name="export_md"),
    path("incidents/<int:pk>/report.pdf", views_postincident.export_pdf, name="export_pdf"),
    path("action-items/", views_postincident.action_items, name="action_items"),
    path("reports/", views_postincident.reports_page, name="reports"),
    path("reports/export.csv", views_postincident.reports_csv, name="reports_csv"),
    path("reports/export.pdf", views_postincident.reports_pdf, name="reports_pdf"),
]
