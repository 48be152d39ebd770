"""Responses shared by the HTMX views of both apps."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def htmx_error(request: HttpRequest, error: str) -> HttpResponse:
    """An HTMX action's refusal, shown in the page's flash area (status 422)."""
    response = render(request, "partials/flash.html", {"error": error}, status=422)
    response["HX-Retarget"] = "#flash"
    response["HX-Reswap"] = "innerHTML"
    return response
