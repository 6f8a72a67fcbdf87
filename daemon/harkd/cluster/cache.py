"""``router.cache.store: redis``: cached answers shared by every replica.

Each answer is one Redis string with the cache's TTL (``SET PX``); the size is bounded by
the TTL and Redis's own ``maxmemory`` policy, not ``max_entries``. While Redis is down the
replica caches in memory (an LRU of ``max_entries``): a miss costs an upstream call, never
a failed request.
"""

from __future__ import annotations

from ..router.cache import MemoryStore, dumps, loads
from ..router.types import ChatResponse
from .link import Cluster, Unavailable


class RedisStore:
    """A :class:`~harkd.router.cache.Store` in Redis, with a memory store as fallback."""

    def __init__(self, cluster: Cluster, fallback: MemoryStore) -> None:
        self.cluster = cluster
        self.fallback = fallback

    async def get(self, key: str) -> ChatResponse | None:
        try:
            text = await self.cluster.run(lambda r: r.get(self.cluster.key("cache", key)))
        except Unavailable:
            return await self.fallback.get(key)
        if text is None:
            return None
        try:
            return loads(text)
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, key: str, response: ChatResponse, ttl: float) -> None:
        body = dumps(response)
        try:
            await self.cluster.run(lambda r: r.set(self.cluster.key("cache", key), body,
                                                   px=max(1, int(ttl * 1000))))
        except Unavailable:
            await self.fallback.put(key, response, ttl)
