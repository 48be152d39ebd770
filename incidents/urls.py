from django.urls import path

from . import views

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
]
