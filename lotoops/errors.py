"""The 500 handler: a database that cannot be reached (PostgreSQL restarting, down, or
every connection refused) is a clear 503 page with Retry-After, not an error page;
anything else is Django's own 500. The 503 page touches no database and no template
context (the session, the user and the menu would all need one)."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults

UNAVAILABLE_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>LotoOps: database unavailable"
    "</title><h1>The database is unavailable</h1><p>LotoOps cannot reach its database "
    "right now. Nothing was changed: try again in a few seconds.</p></html>"
)
RETRY_AFTER = 5


def database_unavailable(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def server_error(request: HttpRequest, template_name: str = "500.html") -> HttpResponse:
    # Django calls this inside the `except` that caught the request's exception.
    if database_unavailable(sys.exception()):
        response = HttpResponse(UNAVAILABLE_PAGE, status=503, content_type="text/html")
        response["Retry-After"] = str(RETRY_AFTER)
        response["Cache-Control"] = "no-store"
        return response
    return defaults.server_error(request, template_name)
