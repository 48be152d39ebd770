"""The API's URLs. The token is the authentication, so the site's login redirect
does not apply (LoginRequiredMiddleware): every pattern is marked login-free, and
every operation but the schema and its docs page requires the token; those two
require the site's login instead (`docs_decorator` in main.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver

from .main import api


def _login_free(patterns: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _login_free(pattern.url_patterns)
        else:
            pattern.callback = login_not_required(pattern.callback)
    return patterns


patterns, app_name, namespace = api.urls
urlpatterns = _login_free(list(patterns))
