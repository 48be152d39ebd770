"""The project's own middleware.

Times in the viewer's own zone: each request activates the zone chosen on the
profile page (`incidents.models.UserProfile`), else the site's TIME_ZONE, so every
`|date` and `localtime` of the pages uses it (and its label, `T`, says which)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import redis
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.deprecation import MiddlewareMixin

from incidents.models import UserProfile
from incidents.rules import sessions

# Probes and scrapes have no viewer: they never wait on the profile's lookup.
NO_VIEWER = ("/healthz", "/readyz", "/metrics")


def _zone(request: HttpRequest) -> str:
    if request.path.startswith(NO_VIEWER):
        return settings.TIME_ZONE
    try:
        return UserProfile.zone_of(request.user)
    except DatabaseError:  # the database is down: the page says so, in the site's zone
        return settings.TIME_ZONE


async def _azone(request: HttpRequest) -> str:
    if request.path.startswith(NO_VIEWER):
        return settings.TIME_ZONE
    try:
        user = await request.auser()
        return await sync_to_async(UserProfile.zone_of)(user)
    except DatabaseError:
        return settings.TIME_ZONE


class ViewerTimeZoneMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        timezone.activate(ZoneInfo(_zone(request)))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        timezone.activate(ZoneInfo(await _azone(request)))
        try:
            response: Awaitable[HttpResponse] = self.get_response(request)
            return await response
        finally:
            timezone.deactivate()


class NoStoreMiddleware(MiddlewareMixin):
    """`Cache-Control: no-store, private` on every answer Django gives (pages, HTMX
    partials, the API, streams, evidence downloads, exports): what a signed-in
    person was shown must not stay in a shared cache or the browser's disk cache
    (the back button after logging out, a proxy). Static files never get here
    (WhiteNoise answers them first, cacheable); the health probes keep their own."""

    EXEMPT = ("/healthz", "/readyz")

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if not request.path.startswith(self.EXEMPT):
            patch_cache_control(response, no_store=True, private=True)
        return response


# Requests no person makes: the live streams (and their reconnects, every
# SSE_MAX_DURATION), and polls marked with this header (hx-headers on the polling
# element). A page left open must not keep its session alive for ever.
LIVE_VIEWS = frozenset({"incidents:stream", "incidents:dashboard_stream"})
BACKGROUND_HEADER = "X-LotoOps-Background"


class SessionTimeoutMiddleware(MiddlewareMixin):
    """Ends a signed-in session SESSION_MAX_AGE after sign-in, or SESSION_IDLE_TIMEOUT
    after the person's last request (incidents/rules/sessions.py): the request finds
    itself logged out, so LoginRequiredMiddleware (after this one) sends it to the
    login page. Live streams and marked polls are not activity."""

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        if request.path.startswith(NO_VIEWER):
            # Probes and scrapes: health must answer (503 with its JSON) with the
            # database down, never wait on the session's row.
            return
        session = getattr(request, "session", None)
        if session is None or SESSION_KEY not in session:
            return
        now = timezone.now().timestamp()
        if sessions.expired(
            session,
            now,
            max_age=settings.SESSION_MAX_AGE,
            idle=settings.SESSION_IDLE_TIMEOUT,
        ):
            logout(request)
            return
        if _background(request):
            # Not activity, and never a session write: a stream's response outlives the
            # view, and a connection its session save took would be held until it ends.
            return
        if sessions.STARTED not in session:
            session[sessions.STARTED] = now
        if now - session.get(sessions.SEEN, 0) >= sessions.SEEN_EVERY:
            session[sessions.SEEN] = now


def _background(request: HttpRequest) -> bool:
    match = request.resolver_match
    if match is not None and match.view_name in LIVE_VIEWS:
        return True
    # Only reads: a POST is always someone's click.
    return request.method in ("GET", "HEAD") and BACKGROUND_HEADER in request.headers


# Where a bearer token is the authentication: the API, the alert receivers, /metrics.
TOKEN_PATHS = ("/api/", "/hooks/", "/metrics")


def bad_token_key(address: str) -> str:
    return f"lotoops:bad-token:{address}"


class BadTokenThrottleMiddleware(MiddlewareMixin):
    """Counts, per client address, the requests to a token-authenticated endpoint that
    carried an Authorization header and were refused (401). Past BAD_TOKEN_LIMIT within
    BAD_TOKEN_WINDOW seconds, such a refusal is answered 429 with Retry-After instead: a
    flood of guesses is cut short and a misconfigured sender is told plainly. A good
    token is never refused for its address (only refusals are turned into 429s), so a
    sender behind the same address as a bad one keeps working. The count lives in the
    cache (Redis in production, shared by every web process; the process's memory
    otherwise). The address is the connection's, or the one a trusted proxy gave
    (uvicorn's --forwarded-allow-ips: never `*`, see the README)."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if (
            response.status_code != 401
            or not request.path.startswith(TOKEN_PATHS)
            or "Authorization" not in request.headers
        ):
            return response
        window = max(1, int(settings.BAD_TOKEN_WINDOW))
        key = bad_token_key(request.META.get("REMOTE_ADDR", ""))
        try:
            cache.add(key, 0, timeout=window)
            count = cache.incr(key)
        except (ValueError, redis.RedisError, OSError):  # expired in between, or the cache is down
            return response
        if count <= settings.BAD_TOKEN_LIMIT:
            return response
        refused = JsonResponse(
            {"detail": f"Too many requests with a bad token: try again in {window} s."},
            status=429,
        )
        refused["Retry-After"] = str(window)
        patch_cache_control(refused, no_store=True, private=True)
        return refused
