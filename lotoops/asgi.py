"""ASGI entry point: the SSE timeline streams need it (async views)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")

application = get_asgi_application()
