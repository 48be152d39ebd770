"""Times in the viewer's own zone: each request activates the zone chosen on the
profile page (`incidents.models.UserProfile`), else the site's TIME_ZONE, so every
`|date` and `localtime` of the pages uses it (and its label, `T`, says which)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from incidents.models import UserProfile


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
        timezone.activate(ZoneInfo(UserProfile.zone_of(request.user)))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        user = await request.auser()
        zone = await sync_to_async(UserProfile.zone_of)(user)
        timezone.activate(ZoneInfo(zone))
        try:
            response: Awaitable[HttpResponse] = self.get_response(request)
            return await response
        finally:
            timezone.deactivate()
