"""Cron in a cluster: each fire runs on exactly one replica.

Every replica's clock wakes at each fire time; before it runs the fire it takes a lease
on ``PREFIX:cron:PIPELINE:FIRE_TIME`` (``SET NX PX`` in a Lua script that also hands out
a fencing token, one counter per pipeline). The winner then confirms the lease (the value
must still be its own, so a replica that stalled past its lease is fenced out) and the
confirmed fire is kept as done for ``grace`` + 60 s, so no replica runs it again; the
losers see the key and skip. The token reaches the run as ``trigger.fence``.

A replica that dies between taking and confirming a lease leaves a claim that expires
after :data:`LEASE`; the others look again then and one of them catches the fire up
(within ``grace``). The newest confirmed fire is kept as ``PREFIX:cron:PIPELINE:last``,
so a replica that starts (or a whole cluster that restarts) catches up from the cluster's
last fire, not its own.
"""

from __future__ import annotations

from typing import Literal

from .link import Cluster, Unavailable

#: how long a claimed but unconfirmed fire stays taken (seconds)
LEASE = 5.0

CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], 'claim|' .. token .. '|' .. ARGV[1], 'PX', ARGV[2])
return {token, ''}
"""

CONFIRM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[4]) > last then redis.call('SET', KEYS[2], ARGV[4]) end
return 1
"""

Verdict = Literal["run", "taken", "pending", "offline"]


class FireLeases:
    """The fire leases of one cron pipeline."""

    def __init__(self, cluster: Cluster, pipeline: str, grace: float) -> None:
        self.cluster = cluster
        self.pipeline = pipeline
        self.keep_ms = int((grace + 60.0) * 1000)
        self.offline = cluster.config.cron_offline
        self._claim = cluster.script("cron_claim", CLAIM)
        self._confirm = cluster.script("cron_confirm", CONFIRM)

    def _key(self, *parts: str) -> str:
        return self.cluster.key("cron", self.pipeline, *parts)

    async def take(self, scheduled: float) -> tuple[Verdict, int | None]:
        """``("run", token)`` when this replica is to run the fire at ``scheduled``;
        ``taken`` (another replica ran it), ``pending`` (another replica claimed it and
        has not confirmed yet: look again after :data:`LEASE`) or ``offline`` (Redis is
        unavailable)."""
        fire = self._key(f"{scheduled:.3f}")
        fence = self._key("fence")
        try:
            token, holder = await self.cluster.run(lambda r: self._claim(
                keys=[fire, fence], args=[self.cluster.replica, int(LEASE * 1000)], client=r))
            token = int(token)
            if token == 0:
                return ("pending" if str(holder).startswith("claim|") else "taken"), None
            mine = f"claim|{token}|{self.cluster.replica}"
            done = f"done|{token}|{self.cluster.replica}"
            ok = await self.cluster.run(lambda r: self._confirm(
                keys=[fire, self._key("last")], args=[mine, done, self.keep_ms, scheduled],
                client=r))
        except Unavailable:
            return "offline", None
        return ("run", token) if int(ok) else ("taken", None)

    async def last(self) -> float | None:
        """The cluster's newest confirmed fire, or None (none yet, or Redis is down)."""
        try:
            value = await self.cluster.run(lambda r: r.get(self._key("last")))
        except Unavailable:
            return None
        return float(value) if value else None
