"""``llm`` sessions in Redis, so a conversation goes on whichever replica answers.

Each session is a Redis list of its turns (``ROLE US TOKENS US TEXT``, US being the
unit separator U+001F: cheaper to split than JSON to parse), trimmed to
``sessions.keep``. Every turn is also written to the replica's own SQLite store: while
Redis is down a session goes on with the turns this replica has seen (all of them behind a
sticky load balancer, fewer behind a round-robin one). Turns written while Redis is down
wait in memory (at most :data:`PENDING`) and are pushed, in order, when it is back.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..logs import get_logger
from ..sessions import CLUSTER_KEY, SessionStore, newest, turns
from .link import Cluster, Unavailable

if TYPE_CHECKING:
    from ..contracts import Services

log = get_logger("harkd.cluster")

#: turns kept for replay while Redis is down; older ones are dropped (and counted)
PENDING = 10000
SEP = "\x1f"


class SharedSessions:
    """A :class:`~harkd.sessions.Sessions` store in Redis, over the local SQLite one."""

    def __init__(self, cluster: Cluster, local: SessionStore) -> None:
        self.cluster = cluster
        self.local = local
        self.budget = local.budget
        self.keep = local.keep
        self.pending: collections.deque[tuple[str, list[str]]] = collections.deque()
        self.dropped = 0
        cluster.reconciler("sessions", self.replay)

    def _key(self, session: str) -> str:
        return self.cluster.key("session", session)

    async def load(self, key: str, budget: int | None = None) -> list[dict[str, str]]:
        try:
            raw: list[str] = await self.cluster.run(
                lambda r: r.lrange(self._key(key), -self.keep, -1))
        except Unavailable:
            return self.local.history(key, budget)
        rows = []
        for item in reversed(raw):
            role, tokens, content = item.split(SEP, 2)
            rows.append((role, content, int(tokens)))
        return newest(rows, self.budget if budget is None else budget)

    async def save(self, key: str, messages: Iterable[Mapping[str, Any]]) -> None:
        rows = turns(messages)
        items = [f"{role}{SEP}{tokens}{SEP}{content}" for role, content, tokens in rows]
        self.local.append(key, [{"role": r, "content": c} for r, c, _ in rows])
        try:
            await self.cluster.run(functools.partial(self._push, key=key, items=items))
        except Unavailable:
            self.pending.append((key, items))
            while len(self.pending) > PENDING:
                self.pending.popleft()
                self.dropped += 1

    async def _push(self, client: Any, key: str, items: list[str]) -> Any:
        async with client.pipeline(transaction=False) as p:  # a lost trim: trimmed next time
            p.rpush(self._key(key), *items)
            p.ltrim(self._key(key), -self.keep, -1)
            return await p.execute()

    async def replay(self) -> None:
        """Push the turns written while Redis was down (a reconciler)."""
        pushed = 0
        while self.pending:
            key, items = self.pending[0]
            await self.cluster.run(functools.partial(self._push, key=key, items=items))
            self.pending.popleft()
            pushed += len(items)
        if pushed or self.dropped:
            log.info("cluster_sessions_replayed", turns=pushed, dropped=self.dropped)
            self.dropped = 0

    async def aclose(self) -> None:
        """The local store is closed by its own owner (``services.shared``)."""


def install(services: Services, link: Cluster) -> None:
    """Keep this daemon's ``llm`` sessions in Redis (with the local SQLite store as the
    fallback while Redis is away); called when the daemon joins its cluster."""
    services.shared[CLUSTER_KEY] = SharedSessions(link, SessionStore.shared(services))
