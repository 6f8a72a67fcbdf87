"""The values of routing: one deployment's state, one call's bookkeeping, and the order
in which a call meets the deployments of an alias (tiers, then weight)."""

from __future__ import annotations

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
