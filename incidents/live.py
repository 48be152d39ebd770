"""The live timeline: Server-Sent Events built from the database.

The database is the source of truth: a stream sends every timeline event with an
id greater than the last one the page saw, so a reconnect loses nothing and
doubles nothing. Redis pub/sub (when REDIS_URL is set) only wakes streams up
as soon as an event commits; without Redis a stream polls the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import cache

import redis
import redis.asyncio as aredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

log = logging.getLogger(__name__)

# Streams open in this process, per incident (for introspection and tests).
active_streams: Counter[int] = Counter()


def channel_for(incident_id: int) -> str:
    return f"lotoops:timeline:{incident_id}"


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def publish(incident_id: int, event_id: int) -> None:
    """Wake the streams of one incident; a Redis hiccup only delays them (they re-poll)."""
    if not settings.REDIS_URL:
        return
    try:
        redis_client().publish(channel_for(incident_id), str(event_id))
    except redis.RedisError as exc:
        log.warning("could not publish timeline event %s: %s", event_id, type(exc).__name__)


class Waker:
    """Waits until something may have changed: a Redis message or the poll interval."""

    # With Redis, re-check the database anyway this often (a lost message costs
    # at most this delay).
    REDIS_SAFETY_POLL = 5.0

    def __init__(self, incident_id: int) -> None:
        self.incident_id = incident_id
        self.pubsub: aredis.client.PubSub | None = None
        self.client: aredis.Redis | None = None

    async def open(self) -> None:
        if not settings.REDIS_URL:
            return
        try:
            self.client = aredis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=None, socket_connect_timeout=2
            )
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            await self.pubsub.subscribe(channel_for(self.incident_id))
        except (redis.RedisError, OSError) as exc:
            log.warning("SSE falls back to polling, Redis unavailable: %s", type(exc).__name__)
            await self.close()

    async def wait(self, timeout: float) -> None:
        if self.pubsub is None:
            await asyncio.sleep(min(timeout, settings.SSE_POLL_INTERVAL))
            return
        try:
            message = await self.pubsub.get_message(timeout=min(timeout, self.REDIS_SAFETY_POLL))
            while message is not None:  # drain what else is already buffered
                message = await self.pubsub.get_message(timeout=0)
        except (redis.RedisError, OSError) as exc:
            log.warning("SSE falls back to polling, Redis lost: %s", type(exc).__name__)
            await self.close()

    async def close(self) -> None:
        pubsub, client = self.pubsub, self.client
        self.pubsub = self.client = None
        try:
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()
        except (redis.RedisError, OSError):
            pass


# (event id or None, event name, HTML payload)
Message = tuple[int | None, str, str]


def format_sse(event_id: int | None, event: str, html: str) -> str:
    """One SSE message. Only timeline events carry an id: it is what a reconnect
    resumes after; run-output updates are idempotent swaps and carry none."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n{lines}\n"


async def timeline_stream(
    incident_id: int,
    after: int,
    render_since: Callable[[int], tuple[list[Message], int]],
) -> AsyncIterator[str]:
    """Yield SSE messages for events after `after` until the client goes, or for at
    most SSE_MAX_DURATION: then the browser reconnects (with Last-Event-ID), which
    recycles long-lived connections through proxies and deploys.

    `render_since(after)` runs in a worker thread (it touches the database and
    templates) and returns the messages and the new last event id.
    """
    active_streams[incident_id] += 1
    waker = Waker(incident_id)
    ended = "max duration"
    try:
        await waker.open()
        # Tell the browser's EventSource to retry quickly after a drop.
        yield "retry: 1000\n\n"
        last_write = started = time.monotonic()
        while time.monotonic() - started < settings.SSE_MAX_DURATION:
            messages, after = await sync_to_async(render_since)(after)
            if messages:
                yield "".join(format_sse(*message) for message in messages)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= settings.SSE_KEEPALIVE:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
            await waker.wait(settings.SSE_KEEPALIVE)
    except (asyncio.CancelledError, GeneratorExit):
        ended = "client gone"
        raise
    except Exception as exc:
        ended = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        log.debug("timeline stream of incident %s ended: %s", incident_id, ended)
        active_streams[incident_id] -= 1
        await waker.close()
        # The stream may stay open for hours: do not keep its DB connection
        # (render_since ran in this request's thread) past the stream's end.
        await sync_to_async(connections.close_all)()
