"""ASGI entry point: the SSE timeline streams need it (async views). Requests in
flight are capped at what the database pool can serve (lotoops/inflight.py)."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from lotoops.inflight import InflightLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")

django_application = get_asgi_application()
application = InflightLimit(
    django_application, limit=settings.WEB_MAX_INFLIGHT, wait=settings.WEB_QUEUE_WAIT
)
