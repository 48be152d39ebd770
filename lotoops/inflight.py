"""At most as many requests in flight per web process as its database pool can serve.

Under load, uvicorn hands every request to Django at once and Django gives each a
thread: with 64 threads and 10 pooled connections, the 11th request waits inside the
pool, and past its 10 s timeout answers 500. This ASGI middleware lets at most
WEB_MAX_INFLIGHT requests (default: the pool's size) into Django; the others wait, in
order, up to WEB_QUEUE_WAIT seconds, then get a short 503 page with Retry-After (no
database work, no template), never a pool timeout.

A live timeline stream (text/event-stream) counts only until its response starts: it
holds no database connection while it waits for events (incidents/views/stream.py
gives its request's connection back first and borrows one per job), so a hundred open
pages never lock out a click."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BUSY_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>LotoOps is busy</title>"
    b"<h1>LotoOps is busy</h1><p>Too many requests are being served right now. Nothing was "
    b"changed: try again in a few seconds.</p></html>"
)


def is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"text/event-stream"
    return False


# The process's limiter, for /metrics (lotoops/metrics.py); None outside the ASGI app.
current: InflightLimit | None = None


class InflightLimit:
    def __init__(self, app: ASGIApp, *, limit: int, wait: float, retry_after: int = 2) -> None:
        if limit < 1:
            raise ValueError("WEB_MAX_INFLIGHT must be at least 1")
        self.app = app
        self.limit = limit
        self.wait = wait
        self.retry_after = retry_after
        self.in_flight = 0  # requests holding a permit (for /metrics and tests)
        self.refused = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        global current
        current = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            # Made in the server's event loop (a new loop, e.g. a restarted server in
            # the same process, gets its own: an asyncio primitive is bound to one).
            self._semaphore = asyncio.Semaphore(self.limit)
            self._loop = loop
            self.in_flight = 0
        semaphore = self._semaphore
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait)
        except TimeoutError:
            self.refused += 1
            log.warning(
                "busy: %s requests in flight, %s refused after waiting %s s",
                self.in_flight,
                scope.get("path", ""),
                self.wait,
            )
            await self._busy(send)
            return
        self.in_flight += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.in_flight -= 1
                semaphore.release()

        async def send_and_release_streams(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start" and is_event_stream(message):
                release()

        try:
            await self.app(scope, receive, send_and_release_streams)
        finally:
            release()

    async def _busy(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(BUSY_PAGE)).encode()),
                    (b"retry-after", str(self.retry_after).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": BUSY_PAGE})
