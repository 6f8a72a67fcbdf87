"""The link of one replica to the shared Redis, with its health.

:class:`Cluster` wraps ``redis.asyncio``. Every shared operation goes through
:meth:`Cluster.run`, which gives up after ``cluster.timeout`` and raises
:class:`Unavailable`; the caller then uses its local state. The first failure marks Redis
``down`` (or ``slow``) and is logged once; from then on :meth:`Cluster.run` fails at once,
without a network round trip, until the probe (every ``cluster.probe``) gets a fast answer
again. Then the reconcilers run (pending session turns are pushed, breakers re-shared,
deferred cron fires caught up) and Redis is ``up`` again. A failure before the
reconcilers are done ends that comeback, not a new outage: the next probe tries again.

The probe doubles as the heartbeat: each replica keeps its id in a sorted set, so every
replica knows how many are alive (a down Redis splits the shared limits by that number).
Breaker changes travel on one pub/sub channel (:meth:`Cluster.publish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..errors import HarkError
from ..logs import get_logger
from .config import SHARED_KEY, ClusterConfig

if TYPE_CHECKING:
    from ..contracts import Services

log = get_logger("harkd.cluster")

T = TypeVar("T")
#: connections to Redis per replica
POOL = 32
Health = Literal["connecting", "up", "down", "slow", "closed"]
Handler = Callable[[dict[str, Any]], None]
Reconciler = Callable[[], Awaitable[None]]


class Unavailable(HarkError, ConnectionError):
    """Redis is down or slow; the caller goes on with local state. Raised by
    :meth:`Cluster.run` (never reaches a run or an HTTP client)."""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError, TimeoutError)


class Cluster:
    """One replica's connection to Redis; see the module docstring."""

    def __init__(self, config: ClusterConfig) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.config = config
        self.replica = config.replica
        self.health: Health = "connecting"
        self.since = time.time()
        self.error: str | None = None
        #: replicas seen alive by the last heartbeat (this one included)
        self.replicas = 1
        #: operations answered from local state because Redis was unavailable
        self.local_ops = 0
        #: times Redis went down or slow
        self.outages = 0
        # A blocking pool: a burst of calls waits (within cluster.timeout) for one of
        # POOL connections; the default pool raises "Too many connections" instead.
        # No socket_timeout: every call is bounded by asyncio.timeout (run, _probe), and
        # redis-py sends each command under asyncio.wait_for(socket_timeout), which on
        # Python 3.11 drops a cancellation that arrives as the send completes. The
        # timeout's cancellation lost so, a call to a hung Redis went on to wait for its
        # answer (and to mark it down, not slow); a shutdown's, a task never ended.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis, max_connections=POOL, timeout=None, decode_responses=True,
            socket_connect_timeout=max(config.timeout, 0.5), socket_timeout=None,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.client: Any = aioredis.Redis.from_pool(pool)
        self._errors = _redis_errors()
        self._handlers: dict[str, Handler] = {}
        self._reconcilers: dict[str, Reconciler] = {}
        self._scripts: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._batch: list[Callable[[Any], Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        #: the health a comeback started from, while its reconcilers run
        self._recovering: Health | None = None

    @property
    def up(self) -> bool:
        return self.health == "up"

    def key(self, *parts: str) -> str:
        return self.config.key(*parts)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (a failure leaves the replica on local state) and start the probe."""
        await self._probe()
        self._monitor = asyncio.create_task(self._watch(), name="cluster-probe")

    async def aclose(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            # Slots given back at the last moment still reach Redis.
            await asyncio.wait({self._flusher}, timeout=self.config.timeout * 2)
        # From here on, work fails over at once (a limit's idle timer still gives slots
        # back): it would use the client closed below, which is no Redis outage.
        was_up, self.health = self.up, "closed"
        tasks = {t for t in (self._monitor, self._listener, *self._tasks) if t is not None}
        await _cancel(tasks, every=max(self.config.timeout, 0.05),
                      within=max(self.config.timeout * 8, 2.0))
        if was_up:
            with contextlib.suppress(*self._errors):
                async with asyncio.timeout(self.config.timeout):
                    await self.client.zrem(self.key("replicas"), self.replica)
        with contextlib.suppress(*self._errors):
            await self.client.aclose()

    # -- operations ------------------------------------------------------------------

    async def run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """``await op(client)`` within ``cluster.timeout``; raises :class:`Unavailable`
        at once while Redis is down, and marks it down (or slow) when this call fails."""
        if self.health != "up":
            self.local_ops += 1
            raise Unavailable(f"redis is {self.health}")
        try:
            async with asyncio.timeout(self.config.timeout):
                return await op(self.client)
        except TimeoutError:
            self._mark("slow", f"no answer within {self.config.timeout:g}s")
        except self._errors as exc:
            self._mark("down", str(exc) or type(exc).__name__)
        self.local_ops += 1
        raise Unavailable(f"redis is {self.health}")

    def script(self, name: str, lua: str) -> Any:
        """A registered Lua script (EVALSHA, loaded again after a Redis restart)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(lua)
        return script

    def defer(self, add: Callable[[Any], Any]) -> None:
        """Queue a write nobody waits for (``add(pipeline)`` adds its commands): the
        writes queued within one event-loop turn go in one round trip. While Redis is
        down (or the link closed) they are dropped (a limit slot then expires with its
        lease)."""
        if self.health == "closed":
            return
        self._batch.append(add)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
            self._tasks.add(self._flusher)
            self._flusher.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the writes of this turn join
        while self._batch:
            batch, self._batch = self._batch, []

            async def send(client: Any, batch: list[Callable[[Any], Any]] = batch) -> Any:
                async with client.pipeline(transaction=False) as p:
                    for add in batch:
                        queued = add(p)
                        if inspect.isawaitable(queued):  # a Lua script queues itself async
                            await queued
                    return await p.execute()

            with contextlib.suppress(Unavailable):
                await self.run(send)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run shared work in the background (a breaker shared, leases renewed) until it
        ends or the link closes; its failure only marks Redis down."""
        task = asyncio.create_task(self._quiet(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _quiet(self, coro: Coroutine[Any, Any, Any]) -> None:
        with contextlib.suppress(Unavailable):
            await coro

    def reconciler(self, name: str, fn: Reconciler) -> None:
        """Run ``fn`` each time Redis comes back (and after the first connect); a later
        registration under the same name replaces the earlier one (a reloaded router)."""
        self._reconcilers[name] = fn

    def forget(self, name: str, fn: Reconciler) -> None:
        """Drop ``fn`` (unless a newer registration replaced it already)."""
        if self._reconcilers.get(name) == fn:
            del self._reconcilers[name]

    # -- events between replicas -------------------------------------------------------

    def on_event(self, kind: str, handler: Handler) -> None:
        """Call ``handler(payload)`` for each event of ``kind`` another replica publishes."""
        self._handlers[kind] = handler

    async def publish(self, kind: str, payload: dict[str, Any]) -> None:
        message = json.dumps({"kind": kind, "from": self.replica, **payload})
        await self.run(lambda r: r.publish(self.key("events"), message))

    async def _listen(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            # A connection of its own: the handshake may take longer, as on first connect.
            async with asyncio.timeout(self.config.timeout * 4):
                await pubsub.subscribe(self.key("events"))
            while True:
                message = await pubsub.get_message(timeout=self.config.probe)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    event = json.loads(message["data"])
                except (ValueError, TypeError):
                    continue
                if event.get("from") == self.replica:
                    continue
                handler = self._handlers.get(str(event.get("kind")))
                if handler is not None:
                    handler(event)
        except TimeoutError:
            self._mark("slow", f"no answer within {self.config.timeout * 4:g}s")
        except self._errors as exc:
            self._mark("down", str(exc) or type(exc).__name__)
        finally:
            with contextlib.suppress(*self._errors, RuntimeError):
                await pubsub.aclose()

    # -- health ------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe)
            await self._probe()

    async def _probe(self) -> None:
        now = time.time()
        replicas = self.key("replicas")
        window = 3 * self.config.probe + 1.0
        try:
            # Back only when fast again; the first connect may take a handshake longer.
            first = self.health == "connecting"
            async with asyncio.timeout(self.config.timeout * (4 if first else 1)):
                async with self.client.pipeline(transaction=False) as p:
                    p.zadd(replicas, {self.replica: now})
                    p.zremrangebyscore(replicas, "-inf", now - window)
                    p.zcard(replicas)
                    p.pexpire(replicas, int(window * 1000))
                    out = await p.execute()
        except TimeoutError:
            self._mark("slow", f"no answer within {self.config.timeout:g}s")
            return
        except self._errors as exc:
            self._mark("down", str(exc) or type(exc).__name__)
            return
        if self.health == "closed":  # answered as aclose began: it cancels this task
            return
        self.replicas = max(1, int(out[2]))
        if not self.up and self._recovering is None:
            await self._recover()
        elif self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="cluster-events")

    async def _recover(self) -> None:
        was, since = self.health, self.since
        # Up while the reconcilers run: they, and the work they start, use Redis.
        self._recovering = was
        self.health, self.since, self.error = "up", time.time(), None
        try:
            self._listener = asyncio.create_task(self._listen(), name="cluster-events")
            for name, fn in list(self._reconcilers.items()):
                try:
                    await fn()
                except Unavailable:
                    break
                except Exception:
                    log.exception("cluster_reconcile_failed", part=name)
        finally:
            self._recovering = None
        if not self.up:  # failed again meanwhile (see _mark): the same outage goes on
            if was != "connecting":
                self.since = since
            return
        if was == "connecting":
            log.info("cluster_connected", redis=self.config.where, replica=self.replica,
                     replicas=self.replicas)
        else:
            log.warning("cluster_redis_back", redis=self.config.where,
                        down_for=round(self.since - since, 2), replica=self.replica)

    def _mark(self, health: Health, error: str) -> None:
        if self.health == "closed":  # a call cut off by aclose: no outage
            return
        # A failure while a comeback's reconcilers run (the state ``up`` meanwhile) is
        # still the outage logged when it began: its "back" was not logged yet.
        if self.health in ("down", "slow") or self._recovering in ("down", "slow"):
            self.error = error
            if health == "down" or self.health == "up":
                self.health = health
            return
        first = "connecting" in (self.health, self._recovering)
        self.health, self.since, self.error = health, time.time(), error
        self.outages += 0 if first else 1
        # Logged once per outage: each call meanwhile answers locally without a word.
        log.error("cluster_redis_down", redis=self.config.where, health=health, error=error,
                  replica=self.replica, serving="local state")

    def detail(self) -> dict[str, Any]:
        """For ``/readyz``: how Redis is and since when."""
        out: dict[str, Any] = {"replica": self.replica, "redis": self.config.where,
                               "health": self.health, "since": round(self.since, 3),
                               "replicas": self.replicas}
        if self.error:
            out["error"] = self.error
            out["serving"] = "local state"
        return out


async def _cancel(tasks: set[asyncio.Task[Any]], every: float, within: float) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again each ``every`` seconds
    a task that goes on (a library may swallow a cancellation, as asyncio.wait_for does
    on Python 3.11; anyio's cancel scopes likewise cancel again). Tasks still running
    after ``within`` are logged and left: a shutdown never hangs on them."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = end - loop.time()
        if left <= 0:
            log.warning("cluster_tasks_left", tasks=sorted(t.get_name() for t in pending))
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(every, left))
    for task in tasks:  # retrieve their exceptions, so none is logged as never retrieved
        if task.done() and not task.cancelled():
            task.exception()


async def start(services: Services, config: ClusterConfig) -> Cluster:
    """Connect this daemon to Redis and keep the link in ``services.shared``."""
    cluster = Cluster(config)
    services.shared[SHARED_KEY] = cluster
    await cluster.start()
    return cluster


class Collector:
    """Prometheus gauges of the link: replica id, Redis health, live replicas."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.cluster
        info = GaugeMetricFamily("harkd_cluster_replica", "This replica's id (value 1).",
                                 labels=["replica"])
        info.add_metric([c.replica], 1)
        yield info
        up = GaugeMetricFamily("harkd_cluster_redis_up",
                               "1 while Redis answers fast; 0 while this replica runs on "
                               "local state.", labels=["replica"])
        up.add_metric([c.replica], 1 if c.up else 0)
        yield up
        live = GaugeMetricFamily("harkd_cluster_replicas", "Replicas alive by the last "
                                 "heartbeat.", labels=["replica"])
        live.add_metric([c.replica], c.replicas)
        yield live
        local = CounterMetricFamily("harkd_cluster_local_ops", "Shared operations answered "
                                    "from local state because Redis was unavailable.",
                                    labels=["replica"])
        local.add_metric([c.replica], c.local_ops)
        yield local
        outages = CounterMetricFamily("harkd_cluster_redis_outages",
                                      "Times Redis went down or slow.", labels=["replica"])
        outages.add_metric([c.replica], c.outages)
        yield outages
