"""The live timeline: Server-Sent Events built from the database.

The database is the source of truth: a stream sends every timeline event whose
per-incident sequence number (`seq`, see timeline.py) is above the last one the
page saw, so a reconnect loses nothing and doubles nothing.

Built for hundreds of open pages per web process:

- a stream holds no database connection while it waits: its database work runs
  in a pool thread (`db`) that gives the connection back as soon as it is done;
- one `Hub` per process (per event loop) watches every incident that has open
  streams: with Redis, one pattern subscription for the whole process fans the
  commits out to the incidents' `Feed`s; without Redis, one query per poll
  interval for all of them. A safety poll (one query for all incidents) covers a
  lost Redis message;
- the new events of an incident are fetched and rendered once per viewer class
  (what the viewer may do changes the panels drawn), then personalised per page
  (its CSRF token), not once per open page;
- the viewers' access is re-checked in one batch every SSE_ACCESS_RECHECK seconds
  and before any new event is sent: a stream whose session ended or whose access
  was revoked ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable
from functools import cache
from typing import Any, Protocol

import redis
import redis.asyncio as aredis
from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.db import connections
from django.db.models import Max

from . import panels
from .models import TimelineEvent

log = logging.getLogger(__name__)

# Streams open in this process, per incident (for introspection and tests).
active_streams: Counter[int] = Counter()

# (seq or None, event name, HTML)
Message = tuple[int | None, str, str]
# (messages, the last seq they cover)
Batch = tuple[list[Message], int]


# The dashboard's feed (incident ids start at 1): woken by the events that change the
# list of open incidents, with the event's id (not a per-incident seq: the wake-up
# only, never sent to a page). Each open dashboard then counts what its viewer may see
# (access.dashboard_position) and says "changed" only when that moved.
DASHBOARD = 0
# Events that change what the incident header shows (status, SLA, severity, commander),
# and those that change its "Who's told" card: the open pages redraw them out of band.
HEADER_KINDS = frozenset(
    {"declared", "acknowledged", "status", "reopened", "severity", "commander", "regulatory"}
)
TOLD_KINDS = frozenset({"escalation", "notification", "acknowledged"})
# The dashboard's list shows the header's facts and who could be reached.
DASHBOARD_KINDS = HEADER_KINDS | TOLD_KINDS


def dashboard_latest() -> int:
    """The id of the last committed event that changed the dashboard (0: none): a
    backward walk of the primary key to the first such event."""
    found = (
        TimelineEvent.objects.filter(kind__in=DASHBOARD_KINDS)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return found or 0


def channel_prefix() -> str:
    return f"{settings.SSE_CHANNEL_PREFIX}:timeline:"


def channel_for(incident_id: int) -> str:
    return f"{channel_prefix()}{incident_id}"


def redis_name(role: str) -> str:
    """The Redis CLIENT SETNAME of our connections, so they can be told apart (and counted)."""
    return f"{settings.SSE_CHANNEL_PREFIX}:{role}"


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=2,
        socket_connect_timeout=2,
        client_name=redis_name("publish"),
    )


def publish(incident_id: int, seq: int) -> None:
    """Wake the streams of one incident: `seq` is a new event's, 0 means a panel's live
    output changed (a check run's). A Redis hiccup only delays them (the safety poll)."""
    if not settings.REDIS_URL:
        return
    try:
        redis_client().publish(channel_for(incident_id), str(seq))
    except redis.RedisError as exc:
        log.warning("could not publish timeline event %s: %s", seq, type(exc).__name__)


def _closing[T](fn: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any) -> T:
        try:
            return fn(*args)
        finally:
            # Back to the pool at once: a stream may wait for hours between events.
            connections.close_all()

    return run


async def db[T](fn: Callable[..., T], *args: Any) -> T:
    """Run ORM work in the loop's bounded thread pool (not one thread per stream) and
    give its database connection back before returning."""
    return await sync_to_async(_closing(fn), thread_sensitive=False)(*args)


def format_sse(event_id: int | None, event: str, html: str) -> str:
    """One SSE message. Only timeline events carry an id (their seq): it is what a
    reconnect resumes after; run-output updates are idempotent swaps and carry none."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n{lines}\n"


class Follower(Protocol):
    """One open page's side of a stream (the view's StreamRenderer)."""

    # The viewer class (what this viewer may do on the incident), None once access is gone.
    key: Hashable | None
    # What `personalise` puts in (its CSRF token): pages with the same share the text.
    personal: Hashable

    def render_events(self, after: int) -> Batch:
        """New events after `after`, drawn for this viewer's class: the result is shared
        with every stream of the same incident and class."""
        ...

    def personalise(self, html: str) -> str:
        """Shared HTML made this page's own (its CSRF token)."""
        ...

    def live_items(self) -> list[panels.LiveItem]:
        """The incident's panels' live items (check-run output): the result is shared
        with every stream of the incident in this process."""
        ...

    def pick_updates(self, items: list[panels.LiveItem]) -> list[Message]:
        """This page's id-less live updates among `items`: those it has not sent yet."""
        ...

    # Whether the panels have live updates of their own per stream (`own_updates`).
    has_own_updates: bool
    # Whether its access is re-checked before each message it is sent (what it is sent
    # says something about the incident), besides the periodic re-check of every stream.
    check_each_event: bool
    # Seconds at least between two of its messages (0: none).
    min_interval: float

    def spread(self) -> float:
        """A pause (s) before each of its messages: 0, or at random, so the streams woken
        by one change do not all act in the same instant."""
        ...

    def own_updates(self) -> list[Message]:
        """This page's own id-less live updates (those that differ per viewer)."""
        ...

    def recheck(self, followers: list[Any]) -> None:
        """Re-check the access of these followers (any streams), setting their `key`."""
        ...


class Stream:
    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.ended: str | None = None


class Feed:
    """One incident's wake-ups in this process, shared by all its open streams."""

    def __init__(self, incident_id: int) -> None:
        self.incident_id = incident_id
        self.latest = 0  # the highest seq known committed
        self.panels = 0  # bumped when a panel's live output may have changed
        self.panel_token: Hashable = None  # what the last poll saw of the panels
        self.streams: set[Stream] = set()
        self._changed = asyncio.Event()
        self._batches: dict[Hashable, asyncio.Future[Batch]] = {}
        self._texts: dict[Hashable, str] = {}
        self._checks: dict[int, asyncio.Future[None]] = {}
        self._live: dict[int, asyncio.Future[list[panels.LiveItem]]] = {}

    def state(self) -> tuple[int, int]:
        return self.latest, self.panels

    def wake(self, seq: int) -> None:
        if seq == 0:
            self.panels += 1
        elif seq > self.latest:
            self.latest = seq
        else:
            return
        self.poke()

    def poke(self) -> None:
        """Wake every stream of the incident (each then looks at what concerns it)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: tuple[int, int], timeout: float) -> None:
        if self.state() != seen or timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def events_after(self, after: int, follower: Follower) -> tuple[Batch, Hashable]:
        """The events after `after` for the follower's viewer class: one database query
        and one rendering for all the streams that ask the same at the same time.
        Returns them with the key they are shared under."""
        key = (after, self.latest, follower.key)
        future = self._batches.get(key)
        if future is None:
            future = asyncio.ensure_future(db(follower.render_events, after))
            self._batches[key] = future
            future.add_done_callback(_forget_failed(self._batches, key))
            _trim(self._batches)
            # The access re-check the new events need runs alongside their rendering.
            if follower.check_each_event:
                self._check_future(self.latest)
        # Shielded: a page that closes must not cancel the work the others wait for.
        return await asyncio.shield(future), key

    async def live_updates(self, follower: Follower) -> list[Message]:
        """The follower's new live updates: the panels' shared live items are fetched
        once per change of the panels (one query and one rendering for every open stream
        of the incident in this process), then each stream picks what it has not sent;
        plus the stream's own updates of panels that differ per viewer."""
        key = self.panels
        future = self._live.get(key)
        if future is None:
            future = asyncio.ensure_future(db(follower.live_items))
            self._live = {key: future}  # the latest only: every stream asks for it
            future.add_done_callback(_forget_failed(self._live, key))
        out = follower.pick_updates(await asyncio.shield(future))
        if follower.has_own_updates:
            out += await db(follower.own_updates)
        return out

    def sse_text(self, key: Hashable, messages: list[Message], follower: Follower) -> str:
        """The SSE text of a shared batch made the page's own, once per personalisation:
        a thousand pages of one user on one incident format it once, not a thousand times."""
        text_key = (key, follower.personal)
        text = self._texts.get(text_key)
        if text is None:
            text = self._texts[text_key] = "".join(
                format_sse(seq, name, follower.personalise(html)) for seq, name, html in messages
            )
            _trim(self._texts)
        return text

    async def check_access(self, seq: int) -> None:
        """Before events up to `seq` go out: re-check every viewer of the incident, once
        (the streams that lose access are marked ended by that one check)."""
        await asyncio.shield(self._check_future(seq))

    def _check_future(self, seq: int) -> asyncio.Future[None]:
        future = self._checks.get(seq)
        if future is None:
            future = asyncio.ensure_future(self._check_all())
            self._checks = {seq: future}
            future.add_done_callback(_forget_failed(self._checks, seq))
        return future

    async def _check_all(self) -> None:
        streams = list(self.streams)
        followers = [stream.follower for stream in streams]
        if not followers:
            return
        await db(followers[0].recheck, followers)
        for stream in streams:
            if stream.follower.key is None and stream.ended is None:
                stream.ended = "access gone"


def _trim(store: dict[Any, Any], keep: int = 64) -> None:
    """Forget the oldest shared results: every stream has moved past them."""
    while len(store) > keep:
        store.pop(next(iter(store)))


def _forget_failed(store: dict[Any, Any], key: Hashable) -> Callable[[asyncio.Future[Any]], None]:
    """Drop a shared result that failed, so the next stream asks again."""

    def forget(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            store.pop(key, None)

    return forget


class Hub:
    """The process's watcher of every incident with open streams (one per event loop)."""

    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()

    @classmethod
    def current(cls) -> Hub:
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls()
        return hub

    def __init__(self) -> None:
        self.feeds: dict[int, Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watching = False
        self._rechecking = False
        self.mode = "idle"  # "redis" or "poll" while streams are open (tests, healthz)

    def join(self, incident_id: int, stream: Stream) -> Feed:
        feed = self.feeds.get(incident_id)
        if feed is None:
            feed = self.feeds[incident_id] = Feed(incident_id)
        feed.streams.add(stream)
        if not self._watching:
            self._start(self._watch())
            self._watching = True
        if not self._rechecking:
            self._start(self._recheck())
            self._rechecking = True
        return feed

    def leave(self, feed: Feed, stream: Stream) -> None:
        feed.streams.discard(stream)
        if not feed.streams and self.feeds.get(feed.incident_id) is feed:
            del self.feeds[feed.incident_id]

    def _start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- waking the feeds up ----------------------------------------------------------

    async def _watch(self) -> None:
        """Until the last stream of this process ends: Redis if configured (falling back
        to polling for a while when it fails), else polling."""
        retry_redis_at = 0.0
        try:
            while self.feeds:
                if settings.REDIS_URL and time.monotonic() >= retry_redis_at:
                    try:
                        await self._listen()
                        continue
                    except (redis.RedisError, OSError) as exc:
                        log.warning("SSE polls, Redis unavailable: %s", type(exc).__name__)
                        retry_redis_at = time.monotonic() + 5
                self.mode = "poll"
                await self._poll()
                await asyncio.sleep(settings.SSE_POLL_INTERVAL)
        finally:
            self._watching = False
            self.mode = "idle"

    async def _listen(self) -> None:
        """One Redis pattern subscription for every incident's channel: each message
        wakes the feed of its incident (if this process has streams on it)."""
        client = aredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=None,  # get_message's own timeout bounds each read
            health_check_interval=30,
            client_name=redis_name("listen"),
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        prefix = channel_prefix()
        try:
            await asyncio.wait_for(pubsub.psubscribe(f"{prefix}*"), 5)
            self.mode = "redis"
            await self._poll()  # what committed before the subscription took effect
            polled = time.monotonic()
            while self.feeds:
                message = await pubsub.get_message(timeout=1.0)
                while message is not None:
                    self._dispatch(message, prefix)
                    message = await pubsub.get_message(timeout=0)
                if time.monotonic() - polled >= settings.SSE_SAFETY_POLL:
                    await self._poll()
                    polled = time.monotonic()
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except (redis.RedisError, OSError):
                pass

    def _dispatch(self, message: dict[str, Any], prefix: str) -> None:
        channel, data = message.get("channel"), message.get("data")
        try:
            incident_id = int(channel.decode().removeprefix(prefix))
            seq = int(data)
        except (AttributeError, ValueError, TypeError):
            return
        feed = self.feeds.get(incident_id)
        if feed is not None:
            feed.wake(seq)

    async def _poll(self) -> None:
        """One query for the latest seq of every watched incident (and one per panel
        with live output), whatever the number of streams."""
        ids = list(self.feeds)
        if not ids:
            return
        try:
            latest, tokens = await db(_poll_state, ids)
        except Exception as exc:  # a database hiccup must not stop every stream's wake-ups
            log.warning("SSE poll failed, trying again: %s: %s", type(exc).__name__, exc)
            return
        for incident_id, seq in latest.items():
            feed = self.feeds.get(incident_id)
            if feed is not None:
                feed.wake(seq)
        for incident_id, token in tokens.items():
            feed = self.feeds.get(incident_id)
            if feed is not None and token != feed.panel_token:
                feed.panel_token = token
                feed.wake(0)

    # --- access ---------------------------------------------------------------------

    async def _recheck(self) -> None:
        """Every SSE_ACCESS_RECHECK seconds, one batch check of every open stream's
        viewer; those whose access is gone end (within that interval)."""
        try:
            while self.feeds:
                await asyncio.sleep(settings.SSE_ACCESS_RECHECK)
                streams = [s for feed in list(self.feeds.values()) for s in feed.streams]
                if not streams:
                    continue
                # Each kind of follower (incident pages, dashboards) checks its own.
                kinds: dict[type, list[Any]] = {}
                for stream in streams:
                    kinds.setdefault(type(stream.follower), []).append(stream.follower)
                try:
                    for followers in kinds.values():
                        await db(followers[0].recheck, followers)
                except Exception:  # a database hiccup: try again next round
                    log.exception("SSE access re-check failed")
                    continue
                for feed in list(self.feeds.values()):
                    gone = [s for s in feed.streams if s.follower.key is None and not s.ended]
                    for stream in gone:
                        stream.ended = "access gone"
                    if gone:
                        feed.poke()
        finally:
            self._rechecking = False


def _poll_state(ids: list[int]) -> tuple[dict[int, int], dict[int, Hashable]]:
    dashboard = DASHBOARD in ids
    ids = [incident_id for incident_id in ids if incident_id != DASHBOARD]
    latest = dict(
        TimelineEvent.objects.filter(incident_id__in=ids)
        .values("incident_id")
        .annotate(last=Max("seq"))
        .values_list("incident_id", "last")
    )
    tokens: dict[int, list[Hashable]] = {incident_id: [] for incident_id in ids}
    for panel in panels.PANELS.values():
        if panel.poll is not None:
            found = panel.poll(ids)
            for incident_id in ids:
                tokens[incident_id].append(found.get(incident_id))
    if dashboard:
        latest[DASHBOARD] = dashboard_latest()
    return latest, {incident_id: tuple(t) for incident_id, t in tokens.items()}


def _release_request_thread() -> None:
    """Django runs a request's sync middleware in a thread of the request's own
    (asgiref's ThreadSensitiveContext), kept until the request ends: for a stream,
    until the page goes, one idle thread per open page. The middleware is done once
    the stream starts, so let that thread go now. A later thread-sensitive call in
    this request would get a new one (asgiref makes it on demand and shuts it down at
    the request's end); without these asgiref internals this does nothing."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    if context is None or executors is None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


async def timeline_stream(incident_id: int, after: int, follower: Follower) -> AsyncIterator[str]:
    """Yield SSE messages for events after `after` until the client goes, its access
    goes, or SSE_MAX_DURATION passes: then the browser reconnects (with Last-Event-ID),
    which recycles long-lived connections through proxies and deploys."""
    hub = Hub.current()
    stream = Stream(follower)
    active_streams[incident_id] += 1
    feed = hub.join(incident_id, stream)
    ended = "max duration"
    _release_request_thread()
    try:
        # Tell the browser's EventSource to retry quickly after a drop.
        yield "retry: 1000\n\n"
        last_write = started = time.monotonic()
        first, panels_seen, asked = True, -1, 0
        sent_at = 0.0  # a follower may ask for pauses between and before its messages
        while True:
            if stream.ended or follower.key is None:
                ended = stream.ended or "access gone"
                break
            if time.monotonic() - started >= settings.SSE_MAX_DURATION:
                break
            seen = feed.state()
            text = ""
            out: list[Message] = []
            # Ask the database only when a wake-up announced a seq it has not asked for
            # (a message from elsewhere with a seq that never comes cannot spin this loop).
            progressed = False
            if first or feed.latest > max(after, asked):
                asked = feed.latest
                (batch, upto), key = await feed.events_after(after, follower)
                progressed = upto > after
                if batch:
                    # On every event: nobody whose access went receives it (checked
                    # after the wake-up that announced it).
                    if follower.check_each_event:
                        await feed.check_access(asked)
                    if stream.ended:
                        continue
                    text = feed.sse_text(key, batch, follower)
                after = upto
            if first or feed.panels != panels_seen:
                panels_seen = feed.panels
                out += await feed.live_updates(follower)
            first = False
            if text or out:
                if (pause := follower.spread()) > 0:
                    await asyncio.sleep(pause)
                yield text + "".join(format_sse(*message) for message in out)
                last_write = sent_at = time.monotonic()
            elif time.monotonic() - last_write >= settings.SSE_KEEPALIVE:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
            if progressed and after < feed.latest:
                continue  # more than one batch behind
            left = settings.SSE_MAX_DURATION - (time.monotonic() - started)
            keepalive = settings.SSE_KEEPALIVE - (time.monotonic() - last_write)
            await feed.wait(seen, max(0.0, min(left, keepalive)))
            if (pause := follower.min_interval - (time.monotonic() - sent_at)) > 0:
                await asyncio.sleep(min(pause, max(0.0, left)))
    except (asyncio.CancelledError, GeneratorExit):
        ended = "client gone"
        raise
    except Exception as exc:
        ended = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        log.debug("timeline stream of incident %s ended: %s", incident_id, ended)
        active_streams[incident_id] -= 1
        hub.leave(feed, stream)
