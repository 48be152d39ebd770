"""Times in the viewer's own zone: each request activates the zone chosen on the
profile page (`incidents.models.UserProfile`), else the site's TIME_ZONE, so every
`|date` and `localtime` of the pages uses it (and its label, `T`, says which)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from incidents.models import UserProfile

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
