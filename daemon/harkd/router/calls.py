"""The values of routing: one deployment's state, one call's bookkeeping, and the order
in which a call meets the deployments of an alias (tiers, then weight)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


class Deadline:
    """``asyncio.timeout_at(when)`` at a quarter of its CPU (4 µs per use there): one timer
    that cancels the task awaiting while the deadline is ``armed`` (a stream disarms it
    while its reader holds a chunk, then uses :meth:`refire` for the next wait).
    :meth:`expired` tells its cancellation from any other and takes it back, as
    ``asyncio.timeout`` does. Cancel ``handle`` when done."""

    __slots__ = ("armed", "cancelling", "fired", "handle", "hit", "task")

    def __init__(self, when: float, armed: bool = True) -> None:
        self.fired = self.hit = False
        self.armed = False
        if armed:
            self.arm()
        self.handle: asyncio.Handle = asyncio.get_running_loop().call_at(when, self._fire)

    def arm(self) -> None:
        """Cancel the current task if the deadline passes before :meth:`disarm`."""
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.cancelling = task.cancelling()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def refire(self) -> None:
        """Once passed, cancel the next wait that does not end at once (as a past
        ``timeout_at`` does: what has already arrived can still be read)."""
        self.handle = asyncio.get_running_loop().call_soon(self._fire)

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
