"""Django's Redis cache with one client, and so one connection pool, per process."""

from __future__ import annotations

import threading
from functools import cached_property

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple[str, ...], RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    """Under ASGI, Django makes a cache object per request (`caches` is context-local)
    and each RedisCache builds its own client and connection pool: every request opened
    new Redis connections, and idle ones piled up in each web process (Django PR
    #18459, open). redis-py's client and pool are thread-safe, so one per process (per
    location and options) serves every request."""

    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = (*self._servers, repr(sorted(self._options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
        return client
