"""Response caching, off by default: exact-match on the request, in memory, SQLite or
Redis (in a cluster, shared by the replicas).

Turned on per alias (``router.cache.aliases``) or per ``llm`` step (``cache: true`` or a
TTL). The key is a hash of everything that shapes the answer: alias, messages,
temperature, max tokens, stop, tools, JSON schema, extra params. Only whole, successful
answers without tool calls are stored; errors and broken streams never are. A hit comes
back with ``cached=True``, which the run log shows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from ..durations import seconds
from ..records import dataclass
from .types import ChatRequest, ChatResponse, Usage


def key(req: ChatRequest) -> str:
    """The exact-match key of a request (its origin does not count)."""
    shape = {"model": req.model, "messages": req.messages, "temperature": req.temperature,
             "max_tokens": req.max_tokens, "stop": req.stop, "tools": req.tools,
             "tool_choice": req.tool_choice, "json_schema": req.json_schema,
             "allow_cloud": req.allow_cloud, "params": req.params}
    raw = json.dumps(shape, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


class Store(Protocol):
    """Where cached answers live (memory, SQLite, or Redis in a cluster:
    :class:`harkd.cluster.cache.RedisStore`)."""

    async def get(self, key: str) -> ChatResponse | None: ...

    async def put(self, key: str, response: ChatResponse, ttl: float) -> None: ...


class MemoryStore:
    """An LRU dict with expiry times."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, ChatResponse]] = OrderedDict()

    async def get(self, key: str) -> ChatResponse | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] < time.time():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return hit[1]

    async def put(self, key: str, response: ChatResponse, ttl: float) -> None:
        self._items[key] = (time.time() + ttl, response)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


class SqliteStore:
    """A table in ``STATE/cache/responses.sqlite3`` (WAL); small writes, read by key."""

    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute("create table if not exists responses (key text primary key, "
                         "expires real not null, body text not null)")

    async def get(self, key: str) -> ChatResponse | None:
        with self._lock:
            row = self._db.execute("select expires, body from responses where key = ?",
                                   (key,)).fetchone()
        if row is None or row[0] < time.time():
            return None
        return loads(row[1])

    async def put(self, key: str, response: ChatResponse, ttl: float) -> None:
        body = dumps(response)
        now = time.time()
        with self._lock:
            self._db.execute("insert or replace into responses values (?, ?, ?)",
                             (key, now + ttl, body))
            self._db.execute("delete from responses where expires < ?", (now,))
            self._db.execute("delete from responses where key not in (select key from "
                             "responses order by expires desc limit ?)", (self.max_entries,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Cache:
    """The configured cache: its store, default TTL and the aliases cached by default."""

    store: Store
    ttl: float
    aliases: frozenset[str]

    def ttl_for(self, req: ChatRequest) -> float:
        """0 when this request is not cached: a step's ``cache`` wins over the alias."""
        if req.cache is not None:
            return float(req.cache) if req.cache is not True else self.ttl
        return self.ttl if req.model in self.aliases else 0.0

    async def lookup(self, req: ChatRequest) -> ChatResponse | None:
        if self.ttl_for(req) <= 0:
            return None
        hit = await self.store.get(key(req))
        return replace(hit, cached=True, latency=0.0, ttft=None, attempts=()) if hit else None

    async def remember(self, req: ChatRequest, response: ChatResponse) -> None:
        ttl = self.ttl_for(req)
        if ttl > 0 and not response.tool_calls:
            await self.store.put(key(req), response, ttl)


def dumps(response: ChatResponse) -> str:
    """A cached answer as JSON text (what SQLite and Redis keep)."""
    return json.dumps({"text": response.text, "alias": response.alias,
                       "deployment": response.deployment, "usage": asdict(response.usage),
                       "finish_reason": response.finish_reason}, ensure_ascii=False)


def loads(text: str) -> ChatResponse:
    data = json.loads(text)
    return ChatResponse(text=data["text"], alias=data["alias"], deployment=data["deployment"],
                        usage=Usage(**data["usage"]), finish_reason=data.get("finish_reason"))


def build(raw: Mapping[str, Any] | None, state: Path | None,
          shared: Callable[[MemoryStore], Store] | None = None) -> Cache | None:
    """The ``router.cache`` section as a Cache; None when the section is absent.
    ``store: redis`` wraps a memory store with ``shared`` (in a cluster: Redis,
    :class:`harkd.cluster.cache.RedisStore`); without it, memory alone."""
    if not raw:
        return None
    size = int(raw.get("max_entries", 1000))
    store: Store
    kind = raw.get("store", "memory")
    if kind == "redis" and shared is not None:
        store = shared(MemoryStore(size))
    elif kind == "sqlite" and state is not None:
        from ..state import subdir

        store = SqliteStore(subdir(state, "cache") / "responses.sqlite3", size)
    else:
        store = MemoryStore(size)
    return Cache(store, seconds(raw.get("ttl", "10m")), frozenset(raw.get("aliases", ())))
