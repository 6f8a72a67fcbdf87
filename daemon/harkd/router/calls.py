"""The values of routing: one deployment's state, one call's bookkeeping, and the order
in which a call meets the deployments of an alias (tiers, then weight)."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..records import dataclass
from .backends import prompt_tokens
from .config import Deployment
from .errors import BackendFailed
from .health import Breaker, Limiter
from .types import Attempt, ChatRequest

if TYPE_CHECKING:
    from ..cluster.limits import SharedLimit

#: told of every attempt (metrics, traces, the console)
Observer = Callable[[Attempt], None]
Tiers = tuple[tuple[Deployment, ...], ...]


@dataclass
class DeploymentState:
    """One deployment's breaker and limits (shared by every call of the router)."""

    breaker: Breaker
    limiter: Limiter | None
    #: in a cluster: the limits counted in Redis, and the deployment's name there
    shared: SharedLimit | None = None
    key: str = ""


class Call:
    """The bookkeeping of one call: its attempts and why it left each deployment."""

    __slots__ = ("alias", "attempts", "deadline", "errors", "estimate", "lease", "reason",
                 "req", "stream")

    def __init__(self, req: ChatRequest, stream: bool, queue_timeout: float) -> None:
        self.req = req
        self.alias = req.model
        self.stream = stream
        self.attempts: list[Attempt] = []
        self.errors: list[tuple[Deployment, str, BackendFailed | None]] = []
        self.reason: str | None = None
        self.deadline = time.monotonic() + queue_timeout
        self.estimate = -1
        #: the shared limit slot this call holds (in a cluster)
        self.lease: str | None = None

    def tokens(self) -> int:
        if self.estimate < 0:
            self.estimate = prompt_tokens(self.req) + (self.req.max_tokens or 256)
        return self.estimate


#: deadlines are kept to within this many seconds (late, never early): the deadlines due
#: in one such slot fire together
GRAIN = 0.01


class _Slots:
    """One event loop's deadlines by slot (``ceil(when / GRAIN)``), and one timer, for
    the earliest slot. A timer of its own per call (``loop.call_at``, then its
    cancellation and the heap's clean-up) cost 2.5 µs of a gateway call, and one per slot
    still cost a call that had its slot to itself (every call at one client) a
    ``TimerHandle`` made, pushed, cancelled and cleared from the loop's heap: 13.5k
    instructions of a whole call's 218k in the router. A deadline that is done
    leaves its slot; the timer is not moved for it: it fires for the slot it was set for,
    finds it empty or not, and is set again for the next slot that still has deadlines."""

    __slots__ = ("at", "due", "loop", "order", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[int, set[Deadline]] = {}
        #: the slots joined, as a heap; some may have emptied since (passed over)
        self.order: list[int] = []
        #: the timer, and the slot it fires for
        self.timer: asyncio.TimerHandle | None = None
        self.at = 0

    def join(self, deadline: Deadline, when: float) -> int:
        slot = math.ceil(when / GRAIN)
        due = self.due.get(slot)
        if due is None:
            due = self.due[slot] = set()
            if len(self.order) > 2 * len(self.due) + 64:
                # mostly emptied slots: start afresh (a sorted list is a heap)
                self.order = sorted(self.due)
            else:
                heapq.heappush(self.order, slot)
            if self.timer is None or slot < self.at:
                self._set(slot)
        due.add(deadline)
        return slot

    def leave(self, deadline: Deadline, slot: int) -> None:
        due = self.due.get(slot)
        if due is not None:
            due.discard(deadline)
            if not due:
                del self.due[slot]

    def _set(self, slot: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.at = slot
        self.timer = self.loop.call_at(slot * GRAIN, self._fire)

    def _fire(self) -> None:
        self.timer = None
        order, due = self.order, self.due
        while order and order[0] <= self.at:
            for deadline in due.pop(heapq.heappop(order), ()):
                deadline._fire()
        while order and order[0] not in due:
            heapq.heappop(order)
        if order:
            self._set(order[0])


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = \
    weakref.WeakKeyDictionary()
#: the slots last asked for: a daemon has one loop, and a WeakKeyDictionary lookup (a
#: weak reference made, then hashed) cost more than the rest of the lookup
_LAST: _Slots | None = None


def _slots(loop: asyncio.AbstractEventLoop) -> _Slots:
    global _LAST
    last = _LAST
    if last is not None and last.loop is loop:
        return last
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = _Slots(loop)
    _LAST = slots
    return slots


class Deadline:
    """``asyncio.timeout_at(when)`` at a fraction of its CPU (4 µs per use there): a slot
    of :data:`GRAIN` (the loop's one timer for them all: :class:`_Slots`) that cancels the task
    awaiting while the deadline is ``armed`` (a stream disarms it while its reader holds a
    chunk, then uses :meth:`refire` for the next wait). :meth:`expired` tells its
    cancellation from any other and takes it back, as ``asyncio.timeout`` does.
    :meth:`cancel` it when done."""

    __slots__ = ("armed", "cancelling", "fired", "hit", "loop", "refired", "slot", "slots",
                 "task")

    def __init__(self, seconds: float, armed: bool = True) -> None:
        """A deadline ``seconds`` from now."""
        # The loop is looked up once: each lookup (here and in current_task) is a getpid()
        # system call on Python 3.11.
        self.loop = loop = asyncio.get_running_loop()
        self.fired = self.hit = False
        self.armed = False
        self.refired: asyncio.Handle | None = None
        if armed:
            self.arm()
        self.slots = _slots(loop)
        self.slot = self.slots.join(self, loop.time() + seconds)

    def arm(self) -> None:
        """Cancel the current task if the deadline passes before :meth:`disarm`."""
        task = asyncio.current_task(self.loop)
        assert task is not None
        self.task = task
        self.cancelling = task.cancelling()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def refire(self) -> None:
        """Once passed, cancel the next wait that does not end at once (as a past
        ``timeout_at`` does: what has already arrived can still be read)."""
        self.refired = self.loop.call_soon(self._fire)

    def cancel(self) -> None:
        """Done with: it fires no more."""
        self.slots.leave(self, self.slot)
        if self.refired is not None:
            self.refired.cancel()

    def _fire(self) -> None:
        self.fired = True
        if self.armed:
            self.hit = True
            self.task.cancel()

    def expired(self) -> bool:
        """Whether the task's CancelledError is this deadline's (and only its)."""
        return self.hit and self.task.uncancel() <= self.cancelling


def health(breaker: Breaker, now: float) -> str:
    """``ok``, ``failing`` (failed lately, still in rotation), ``cooling`` (breaker open)
    or ``probing`` (one trial call allowed)."""
    if breaker.state == "open":
        return "cooling" if now < breaker.until else "probing"
    if breaker.state == "half_open":
        return "probing"
    return "failing" if breaker.consecutive else "ok"


def tiers(deps: tuple[Deployment, ...]) -> Tiers:
    order = sorted({d.tier for d in deps})
    return tuple(tuple(d for d in deps if d.tier == t) for t in order)


def weighted(tier: tuple[Deployment, ...]) -> list[Deployment]:
    """A random order in which each deployment comes first in proportion to its weight."""
    return sorted(tier, key=lambda d: random.random() ** (1.0 / d.weight), reverse=True)
