"""WSGI entry point (management tools only: serve the site with ASGI for live streams)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")

application = get_wsgi_application()
