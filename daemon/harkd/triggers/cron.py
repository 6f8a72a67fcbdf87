"""The ``cron`` trigger: runs on a schedule, in a time zone, across restarts and reloads.

``schedule`` is a cron expression of five fields (minute hour day month weekday), six
with a leading seconds field (as in Quartz, Spring and node-cron), or ``@hourly``,
``@daily``, ... (croniter). Times are wall-clock times in ``timezone`` (default UTC), with
daylight saving time handled the way Vixie cron does it: a time that a spring-forward
skips fires at the first instant after the gap; in the hour that a fall-back repeats, a
fixed-hour entry fires once while an entry with ``*`` in the hour field fires in both.

The last fire time is kept in ``STATE/cron/NAME.json``, written atomically just before each
run starts (then fsynced). When
the trigger starts (daemon start, reload) the fires missed since then are handled by
``catch_up``: ``none`` skips them, ``latest`` runs the last one, ``all`` runs each, and
only fires less than ``grace`` old count; every skipped fire is logged
(``cron_missed``), never dropped silently, and no fire runs twice.

``overlap`` says what a fire does while the previous run still runs: ``skip`` it
(logged), ``queue`` it (at most ``queue`` fires wait), or run in ``parallel``.

In a cluster each fire runs on one replica: :mod:`harkd.cluster.cron` hands out the
leases.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import TriggerKind
from ..errors import StepError
from ..logs import get_logger
from ..records import dataclass
from .schedule import Schedule, read_last, sync_last, write_last

if TYPE_CHECKING:
    from ..cluster.cron import FireLeases
    from ..core.bound import Bound
    from ..core.pipeline import Build
    from ..templates import Renderable

log = get_logger("harkd.cron")

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: longest single sleep, so a wall-clock jump or a suspend is noticed within this time
MAX_SLEEP = 30.0


@dataclass(frozen=True, eq=False)
class CronTrigger:
    """A compiled cron trigger."""

    schedule: Schedule
    input: Renderable | None
    overlap: str
    catch_up: str
    grace: float
    queue: int
    kind: str = "cron"
    routes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "cron", "schedule": self.schedule.expression,
                "timezone": self.schedule.timezone, "overlap": self.overlap,
                "catch_up": self.catch_up, "grace": self.grace,
                "next_fire": self.schedule.local(self.schedule.next_after(time.time()))}

    async def handle(self, request: Any, bound: Bound) -> Any:
        raise NotImplementedError("a cron trigger has no routes")

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        await Clock(self, bound).run(started)


class Clock:
    """The long-lived task of one bound cron pipeline: sleeps, fires, keeps the time."""

    def __init__(self, spec: CronTrigger, bound: Bound) -> None:
        self.spec = spec
        self.bound = bound
        self.state = Path(bound.services.settings.state) / "cron" / f"{bound.name}.json"
        self.running: set[asyncio.Task[Any]] = set()
        self.backlog: collections.deque[float] = collections.deque()
        self.draining: asyncio.Task[None] | None = None
        #: lateness of each fire in seconds (the bench reads it)
        self.lateness: list[float] = []
        from ..cluster import of as cluster_of

        cluster = cluster_of(bound.services)
        self.leases: FireLeases | None = None
        if cluster is not None:
            from ..cluster.cron import FireLeases

            self.leases = FireLeases(cluster, bound.name, spec.grace)
        #: in a cluster: fires Redis was down for, and the fencing token of each won fire
        self.deferred: list[float] = []
        self.fences: dict[float, int] = {}
        self.later: set[asyncio.Task[None]] = set()

    async def run(self, started: Callable[[], None]) -> None:
        schedule = self.spec.schedule
        now = time.time()
        last = await asyncio.to_thread(read_last, self.state)
        if last is None or last > now:
            # New pipeline (or a clock that went back): start from now, so that a
            # restart before the first fire catches that fire up.
            last = now
            await asyncio.to_thread(write_last, self.state, now, schedule.expression)
        if self.leases is not None:
            # The cluster's last fire counts, not only this replica's.
            shared = await self.leases.last()
            if shared is not None and last < shared <= now:
                last = shared
            self.leases.cluster.reconciler(f"cron:{self.bound.name}", self._reconcile)
        started()
        log.info("cron_started", pipeline=self.bound.name, schedule=schedule.expression,
                 timezone=schedule.timezone, next_fire=schedule.local(schedule.next_after(now)))
        try:
            await self._loop(last, now)
        finally:
            if self.leases is not None:
                self.leases.cluster.forget(f"cron:{self.bound.name}", self._reconcile)
                for task in self.later:
                    task.cancel()

    async def _loop(self, last: float, now: float) -> None:
        schedule = self.spec.schedule
        await self._catch_up(last, now)
        t = schedule.next_after(max(last, now))
        while True:
            await _sleep_until(t)
            await self._fire(t)
            nxt = schedule.next_after(t)
            now = time.time()
            if nxt < now - 1.0:  # the loop stalled or the machine slept: fires were missed
                await self._catch_up(t, now)
                nxt = schedule.next_after(now)
            t = nxt

    async def _catch_up(self, last: float, now: float) -> None:
        missed = self.spec.schedule.between(last, now)
        if not missed:
            return
        within = [t for t in missed if now - t <= self.spec.grace]
        due = {"none": [], "latest": within[-1:], "all": within}[self.spec.catch_up]
        skipped = len(missed) - len(due)
        if skipped:
            log.warning("cron_missed", pipeline=self.bound.name, missed=len(missed),
                        skipped=skipped, caught_up=len(due), catch_up=self.spec.catch_up,
                        first=self.spec.schedule.local(missed[0]))
        for t in due:
            await self._fire(t, catch_up=True)
        if not due:
            await asyncio.to_thread(write_last, self.state, missed[-1],
                                    self.spec.schedule.expression)

    async def _fire(self, scheduled: float, *, catch_up: bool = False) -> None:
        self.lateness.append(time.time() - scheduled)
        if self.leases is not None and not await self._won(scheduled):
            return
        # Kept before the run starts, with no await in between, so a killed daemon neither
        # repeats nor drops this fire; a write without fsync takes microseconds, so the
        # run is not late. The fsync (for power cuts) follows in a thread.
        write_last(self.state, scheduled, self.spec.schedule.expression, sync=False)
        self._decide(scheduled, catch_up)
        await asyncio.to_thread(sync_last, self.state)

    async def _won(self, scheduled: float) -> bool:
        """In a cluster: whether this replica runs the fire at ``scheduled``."""
        assert self.leases is not None
        verdict, token = await self.leases.take(scheduled)
        if verdict == "run" and token is not None:
            self.fences[scheduled] = token
            return True
        if verdict == "pending":
            # Claimed by a replica that has not confirmed: if it died, its claim expires.
            task = asyncio.create_task(self._look_again(scheduled))
            self.later.add(task)
            task.add_done_callback(self.later.discard)
        elif verdict == "offline":
            if self.leases.offline == "local":
                return True
            if not self.deferred:
                log.warning("cron_deferred", pipeline=self.bound.name,
                            reason="redis unavailable", scheduled=self.spec.schedule.local(
                                scheduled))
            self.deferred.append(scheduled)
        return False

    async def _look_again(self, scheduled: float) -> None:
        from ..cluster.cron import LEASE

        await asyncio.sleep(LEASE + 0.1)
        if time.time() - scheduled <= self.spec.grace:
            await self._fire(scheduled, catch_up=True)

    async def _reconcile(self) -> None:
        """Redis is back: the deferred fires, as ``catch_up`` says (one replica runs each)."""
        missed, self.deferred = self.deferred, []
        now = time.time()
        within = [t for t in missed if now - t <= self.spec.grace]
        due = {"none": [], "latest": within[-1:], "all": within}[self.spec.catch_up]
        if len(missed) > len(due):
            log.warning("cron_missed", pipeline=self.bound.name, missed=len(missed),
                        skipped=len(missed) - len(due), caught_up=len(due),
                        catch_up=self.spec.catch_up, reason="redis unavailable")
        for t in due:
            await self._fire(t, catch_up=True)

    def _decide(self, scheduled: float, catch_up: bool) -> None:
        overlap = self.spec.overlap
        if self.running and overlap == "skip":
            log.warning("cron_skipped", pipeline=self.bound.name, reason="previous run "
                        "still running", scheduled=self.spec.schedule.local(scheduled))
            return
        if self.running and overlap == "queue":
            if len(self.backlog) >= self.spec.queue:
                log.warning("cron_skipped", pipeline=self.bound.name, reason="queue full",
                            waiting=len(self.backlog),
                            scheduled=self.spec.schedule.local(scheduled))
                return
            self.backlog.append(scheduled)
            if self.draining is None:
                self.draining = asyncio.create_task(self._drain())
            return
        self._start(scheduled, catch_up)

    def _start(self, scheduled: float, catch_up: bool = False) -> asyncio.Task[Any]:
        trigger = {"kind": "cron", "schedule": self.spec.schedule.expression,
                   "timezone": self.spec.schedule.timezone, "scheduled": scheduled,
                   "scheduled_local": self.spec.schedule.local(scheduled),
                   "fired": time.time(), "catch_up": catch_up}
        if self.leases is not None:
            trigger["replica"] = self.leases.cluster.replica
            trigger["fence"] = self.fences.pop(scheduled, None)
        data: Any = None
        if self.spec.input is not None:
            try:
                data = self.spec.input.render({"trigger": trigger, "input": None, "vars": {},
                                               "run": {"pipeline": self.bound.name}})
            except StepError as exc:
                # Recorded as a failed run by passing the error on as the run's input
                # would hide it; a log line names the template instead.
                log.error("cron_input_failed", pipeline=self.bound.name, error=exc.message)
                data = None
        run = self.bound.new_run(data, trigger)
        task = self.bound.services.spawn(self.bound.run(run))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def _drain(self) -> None:
        """queue overlap: start the waiting fires one after another."""
        try:
            while self.backlog:
                if self.running:
                    await asyncio.wait(set(self.running))
                    continue
                await asyncio.wait({self._start(self.backlog.popleft())})
        finally:
            self.draining = None


async def _sleep_until(t: float) -> None:
    while True:
        delay = t - time.time()
        if delay <= 0:
            return
        await asyncio.sleep(min(delay, MAX_SLEEP))


PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schedule"],
    "properties": {
        "schedule": {"type": "string",
                     "pattern": r"^\s*(@[a-z]+|(\S+\s+){4,5}\S+)\s*$",
                     "description": "Cron expression: 5 fields (minute hour day month "
                                    "weekday), 6 with leading seconds, or @hourly, @daily, "
                                    "@weekly, @monthly, @yearly.",
                     "examples": ["*/5 * * * *", "0 7 * * 1-5", "*/10 * * * * *", "@daily"]},
        "timezone": {"type": "string", "default": "UTC",
                     "description": "IANA time zone of the schedule, e.g. Europe/Berlin."},
        "input": {"description": "The run's input; strings are templates that see "
                                 "trigger.scheduled, trigger.scheduled_local, ..."},
        "overlap": {"enum": ["skip", "queue", "parallel"], "default": "skip",
                    "description": "A fire while the previous run still runs: skip it, "
                                   "queue it, or run in parallel."},
        "queue": {"type": "integer", "minimum": 1, "default": 16,
                  "description": "overlap: queue: how many fires may wait."},
        "catch_up": {"enum": ["none", "latest", "all"], "default": "latest",
                     "description": "Fires missed while harkd was down or reloading: none, "
                                    "the latest one, or all (each within grace)."},
        "grace": {**durations.SCHEMA, "default": "1h",
                  "description": "How old a missed fire may be and still be caught up."},
    },
}


def build(params: dict[str, Any], b: Build) -> CronTrigger:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # with sysconfig: 2.5 ms

    from croniter import croniter

    expression = " ".join(str(params["schedule"]).split())
    tz = str(params.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        b.error("timezone", f"unknown time zone {tz!r} (use an IANA name such as "
                            "Europe/Berlin or UTC)")
        tz = "UTC"
    fields = expression.split()
    if fields[0].startswith("@"):
        if fields[0] not in MACROS or len(fields) != 1:
            b.error("schedule", f"unknown schedule {expression!r}; macros are "
                                + ", ".join(MACROS))
            expression = "@daily"
    elif not croniter.is_valid(expression, second_at_beginning=len(fields) == 6):
        b.error("schedule", f"invalid cron expression {expression!r} (minute hour day "
                            "month weekday, with an optional leading seconds field)")
        expression = "* * * * *"
    return CronTrigger(
        schedule=Schedule(expression, tz),
        input=b.value("input", params["input"]) if "input" in params else None,
        overlap=params.get("overlap", "skip"),
        catch_up=params.get("catch_up", "latest"),
        grace=b.seconds("grace", params.get("grace", "1h")),
        queue=int(params.get("queue", 16)),
    )


CRON = TriggerKind("cron", "Run on a cron schedule, in a time zone.", PARAMS, build)
