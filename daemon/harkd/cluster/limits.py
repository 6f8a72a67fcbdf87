"""Router state shared by the replicas: deployment limits and circuit breakers.

:class:`SharedLimit` counts a deployment's ``max_concurrent``, ``rpm`` and ``tpm`` in Redis
with one Lua script per call (Redis's clock, so replicas' clocks need not agree); a
deployment limited by ``rpm`` alone takes its slots in blocks sized to the traffic, so a
busy replica asks Redis about once per block rather than once per call. A slot
taken for ``max_concurrent`` is a lease that expires ``timeout`` + 5 s after it was taken,
so a killed replica cannot hold slots for ever. While Redis is down each replica enforces
its share of each limit (the limit divided by the replicas last seen alive) locally.

:class:`SharedBreakers` spreads breaker changes: when one replica opens a deployment's
breaker (``failures`` consecutive failures, or a long ``Retry-After``) it publishes the
cooldown's end; the others open theirs until then without sending a call. A success closes
them everywhere. Open breakers are also kept in a Redis hash, read on (re)connect.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..records import dataclass
from .link import Cluster, Unavailable
from .lua import ACQUIRE, RELEASE, RENEW, RESERVE, SLOTS

if TYPE_CHECKING:
    from ..router.config import Deployment
    from ..router.health import Breaker

#: how long a replica waits before asking again when another replica holds the slots
POLL = 0.05

_ids = itertools.count()
#: keeps slot names apart even if two replicas were given the same id
_PROCESS = uuid.uuid4().hex[:8]
#: how long reserved ``rpm`` slots may wait for their calls (seconds); a call counted in
#: Redis up to this much before it starts keeps the cluster within the limit
VALID = 1.0
#: at most this share of a deployment's ``rpm`` is reserved by one replica at once
SHARE = 20


#: the lease of a slot given back to this replica's own pool (not to Redis)
LOCAL = "local"
#: how long a replica with no call in flight keeps its ``max_concurrent`` slots
IDLE = 0.25


@dataclass
class _Slots:
    """``max_concurrent`` slots held at once: ``member|n`` in Redis, leased; renewed
    while held, given back when the replica is idle."""

    member: str
    n: int
    #: monotonic time until which a new call may use them: its lease in Redis then
    #: still outlasts the longest call (``timeout``)
    valid: float


@dataclass
class _Block:
    """``rpm`` slots reserved at once: counted in Redis in the second ``at``."""

    member: str
    at: int
    left: int
    until: float


def dep_key(dep: Deployment) -> str:
    """A deployment's name in Redis: the same on every replica with the same models."""
    return f"{dep.id}={dep.label}"


class SharedLimit:
    """``max_concurrent``, ``rpm`` and ``tpm`` of one deployment, counted in Redis."""

    def __init__(self, cluster: Cluster, dep: Deployment) -> None:
        self.cluster = cluster
        name = dep_key(dep)
        self.keys = [cluster.key("limit", name, part) for part in ("active", "rpm", "tpm")]
        self.limits = (dep.max_concurrent or 0, dep.rpm or 0, dep.tpm or 0)
        self.lease_ms = int((dep.timeout + 5.0) * 1000)
        self._acquire = cluster.script("limit_acquire", ACQUIRE)
        self._release = cluster.script("limit_release", RELEASE)
        self._reserve = cluster.script("limit_reserve", RESERVE)
        self._slots_script = cluster.script("limit_slots", SLOTS)
        #: without ``tpm``, ``rpm`` and ``max_concurrent`` slots are taken in blocks
        #: (:meth:`_from_stock`, :meth:`_slot`); with it, one exact script call per call
        self.blocks = not dep.tpm
        self._stock: collections.deque[_Block] = collections.deque()
        self._recent: collections.deque[float] = collections.deque()
        self._held: list[_Slots] = []
        self._in_use = 0
        self._idle: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._renew = cluster.script("limit_renew", RENEW)
        #: a block reserved or renewed may take new calls this long (seconds)
        self.fresh = max(1.0, self.lease_ms / 1000 - dep.timeout - 1.0)
        self._slots_key = cluster.key("limit", name, "slots")

    async def acquire(self, tokens: int) -> tuple[float | None, str | None]:
        """``(0, lease)`` when a slot is taken; else ``(seconds to wait, None)``, with
        ``None`` seconds when only a finishing call can free a slot. Raises
        :class:`~harkd.cluster.link.Unavailable` when Redis is."""
        if self.blocks:
            return await self._blocks()
        member = f"{self.cluster.replica}:{_PROCESS}:{next(_ids)}"
        maxc, rpm, tpm = self.limits
        out = int(await self.cluster.run(lambda r: self._acquire(
            keys=self.keys, args=[maxc, rpm, tpm, tokens, member, self.lease_ms], client=r)))
        if out == 0:
            return 0.0, member
        if out < 0:
            return None, None
        return out / 1000.0, None

    async def _blocks(self) -> tuple[float | None, str | None]:
        maxc, rpm, _ = self.limits
        if maxc and not await self._slot():
            return None, None
        if rpm:
            try:
                wait = await self._from_stock()
            except Unavailable:
                if maxc:
                    self._unslot()
                raise
            if wait:
                if maxc:
                    self._unslot()
                return wait, None
        return 0.0, LOCAL if maxc else None

    async def _slot(self) -> bool:
        """Take a ``max_concurrent`` slot from this replica's held ones, reserving more
        in Redis (in blocks that grow with the calls in flight here, at most
        ``max_concurrent`` / (:data:`SHARE` x replicas)) when all are in use."""
        now = time.monotonic()
        # A block whose renewal failed is left to expire in Redis.
        self._held = [b for b in self._held if b.valid > now]
        if self._in_use < sum(b.n for b in self._held):
            self._in_use += 1
            return True
        maxc = self.limits[0]
        cap = maxc // (SHARE * max(1, self.cluster.replicas))
        want = max(1, min(cap, self._in_use // 2))
        member = f"{self.cluster.replica}:{_PROCESS}:{next(_ids)}"
        got, _ = await self.cluster.run(lambda r: self._slots_script(
            keys=[self._slots_key], args=[maxc, want, member, self.lease_ms], client=r))
        if int(got) == 0:
            return False
        self._held.append(_Slots(f"{member}|{int(got)}", int(got), now + self.fresh))
        self._in_use += 1
        if self._renewer is None or self._renewer.done():
            self._renewer = self.cluster.spawn(self._renewing())
        return True

    def _unslot(self) -> None:
        """A call ended: its slot returns to the held ones. A replica idle for
        :data:`IDLE` gives them all back; a busy one the blocks it no longer needs."""
        self._in_use = max(0, self._in_use - 1)
        if not self._in_use:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().call_later(IDLE, self._when_idle)
            return
        held = sum(b.n for b in self._held)
        spare: list[_Slots] = []
        # Keep spare up to twice the newest block or the calls in flight, so a steady
        # load does not churn.
        while self._held and held - self._in_use > max(2 * self._held[-1].n, self._in_use):
            block = self._held.pop()
            held -= block.n
            spare.append(block)
        self._give_slots(spare)

    def _when_idle(self) -> None:
        self._idle = None
        if not self._in_use:
            spare, self._held = self._held, []
            self._give_slots(spare)

    def _give_slots(self, spare: list[_Slots]) -> None:
        if spare:
            key, members = self._slots_key, [b.member for b in spare]
            self.cluster.defer(lambda p: p.zrem(key, *members))

    async def _renewing(self) -> None:
        """While blocks are held: extend their leases every ``fresh / 2`` seconds."""
        while self._held:
            await asyncio.sleep(self.fresh / 2)
            held = list(self._held)
            if not held:
                return
            t0 = time.monotonic()
            args = [self.lease_ms, *(b.member for b in held)]

            async def renew(client: Any, args: list[Any] = args) -> Any:
                return await self._renew(keys=[self._slots_key], args=args, client=client)

            try:
                flags = await self.cluster.run(renew)
            except Unavailable:
                return  # the blocks lapse here when their time is up
            for block, kept in zip(held, flags, strict=True):
                if int(kept):
                    block.valid = t0 + self.fresh
                elif block in self._held:
                    self._held.remove(block)

    async def _from_stock(self) -> float:
        """An ``rpm`` slot from this replica's stock, reserving a block in Redis when it
        is empty. A block is as large as the calls of the last second here (one when
        traffic is light, so a slow trickle reserves nothing it does not use), at most
        1/:data:`SHARE` of ``rpm`` per replica; slots not used within :data:`VALID` are
        given back. Returns 0 (a slot taken) or the seconds until one frees."""
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent[0] < now - VALID:
            recent.popleft()
        while self._stock:
            block = self._stock[0]
            if block.left > 0 and now < block.until:
                block.left -= 1
                return 0.0
            self._stock.popleft()
            self._give_back(block)
        rpm = self.limits[1]
        want = max(1, min(len(recent), rpm // (SHARE * max(1, self.cluster.replicas))))
        member = f"{self.cluster.replica}:{_PROCESS}:{next(_ids)}"
        got, at = await self.cluster.run(lambda r: self._reserve(
            keys=self.keys[1:2], args=[rpm, want], client=r))
        if int(got) == 0:
            return int(at) / 1000.0
        if int(got) > 1:
            self._stock.append(_Block(member, int(at), int(got) - 1,
                                      time.monotonic() + VALID))
        return 0.0

    def _give_back(self, block: _Block) -> None:
        """Uncount a block's unused slots (at its time, so they expire together)."""
        if block.left <= 0:
            return
        key, second, left = self.keys[1], block.at, block.left
        self.cluster.defer(lambda p: p.hincrby(key, str(second), -left))

    def release(self, lease: str, estimated: int, actual: int | None) -> None:
        """Give the slot back and correct the token window (in the background)."""
        if lease == LOCAL:
            self._unslot()
            return
        delta = 0 if actual is None or not self.limits[2] else actual - estimated
        self.cluster.defer(lambda p: self._release(keys=self.keys, args=[lease, delta],
                                                   client=p))


class SharedBreakers:
    """Spreads breaker openings and closings of one router to the other replicas."""

    def __init__(self, cluster: Cluster, breakers: dict[str, Breaker]) -> None:
        self.cluster = cluster
        #: dep_key -> this router's breaker of that deployment
        self.breakers = breakers
        self.hash = cluster.key("breakers")
        cluster.on_event("breaker", self._remote)
        cluster.reconciler("breakers", self.reconcile)

    def opened(self, key: str, breaker: Breaker) -> None:
        until = time.time() + max(0.0, breaker.until - time.monotonic())
        message = {"deployment": key, "until": until}
        self.cluster.spawn(self._share(key, until, message))

    def closed(self, key: str) -> None:
        self.cluster.spawn(self._share(key, None, {"deployment": key, "until": None}))

    async def _share(self, key: str, until: float | None, message: dict[str, Any]) -> None:
        async def write(r: Any) -> Any:
            async with r.pipeline(transaction=False) as p:
                if until is None:
                    p.hdel(self.hash, key)
                else:
                    p.hset(self.hash, key, until)
                p.publish(self.cluster.key("events"),
                          json.dumps({"kind": "breaker", "from": self.cluster.replica,
                                      **message}))
                return await p.execute()

        await self.cluster.run(write)

    def _remote(self, event: dict[str, Any]) -> None:
        breaker = self.breakers.get(str(event.get("deployment")))
        if breaker is None:
            return
        self._apply(breaker, event.get("until"))

    @staticmethod
    def _apply(breaker: Breaker, until: Any) -> None:
        if until is None:
            if breaker.state != "closed":
                breaker.success()
            return
        left = float(until) - time.time()
        if left > 0:
            breaker.hold(time.monotonic(), left)

    async def reconcile(self) -> None:
        """Take the open breakers from Redis; share this replica's open ones."""
        try:
            remote: dict[str, str] = await self.cluster.run(lambda r: r.hgetall(self.hash))
        except Unavailable:
            return
        now = time.monotonic()
        for key, breaker in self.breakers.items():
            if key in remote:
                self._apply(breaker, remote[key])
            elif breaker.state == "open" and breaker.until > now:
                self.opened(key, breaker)
