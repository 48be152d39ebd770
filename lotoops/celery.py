"""The Celery application: settings come from Django's (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery

from . import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")

broker.register()  # the embedded default's atomic filesystem transport

app = Celery("lotoops")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each app package with a `tasks` module (paging and post-incident keep their own).
app.autodiscover_tasks(
    ["incidents.paging", "incidents.postincident", "diagnostics", "alerts"], related_name="tasks"
)
