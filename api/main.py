"""The API object: token auth, error mapping, the OpenAPI schema and its docs page
(Swagger UI from django-ninja's own static files: no CDN; both behind the site's login)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.security import HttpBearer

from diagnostics.services import CheckError
from incidents.services import IncidentError

from . import tokens
from .endpoints import router


class TokenAuth(HttpBearer):
    """`Authorization: Bearer <token>`: a person's token from the admin (API tokens)."""

    def authenticate(self, request: HttpRequest, token: str) -> object | None:
        user = tokens.user_for(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="LotoOps API",
    version="1",
    description=(
        "Read and drive incidents. Every call acts as the token's user, with the same "
        "object permissions as the pages: restricted incidents are invisible (404) "
        "without access; changes need `incidents.change_incident` (403)."
    ),
    auth=TokenAuth(),
    urls_namespace="api",
    docs=Swagger(settings={"persistAuthorization": False}),
    docs_url="/docs",
    openapi_url="/openapi.json",
    # The schema and its docs page are for signed-in people (the login page otherwise):
    # they map every operation, which an anonymous visitor has no use for.
    docs_decorator=login_required,
)
api.add_router("", router)


def _error(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    return api.create_response(request, {"detail": detail}, status=status)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "Not found")


@api.exception_handler(PermissionDenied)
def forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, str(exc) or "Forbidden")


@api.exception_handler(CheckError)
def check_refused(request: HttpRequest, exc: CheckError) -> HttpResponse:
    return _error(request, 400, str(exc))


@api.exception_handler(IncidentError)
def refused(request: HttpRequest, exc: IncidentError) -> HttpResponse:
    """A change the incident's state does not allow (e.g. already acknowledged)."""
    return _error(request, 409, str(exc))
