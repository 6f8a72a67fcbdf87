"""Attempts at deployments: which one a call tries next, and what each attempt's end means.

:class:`Attempts` holds each deployment's breaker and limits. For one call
(:meth:`Attempts.call`) it gives the tiers of the alias (:meth:`~Attempts.plan`), the
deployments of a tier in weighted order with a limit slot taken
(:meth:`~Attempts.admitted`, waiting for a slot up to the call's queue deadline), records
every attempt for the observers, decides after a failure whether to retry (backoff with
jitter, ``Retry-After``) or move on (:meth:`~Attempts.failed`), and builds the answer or
the final :class:`~harkd.router.errors.NoDeployment`. The router's whole and streamed calls
(:mod:`harkd.router.core`, :mod:`harkd.router.streaming`) are loops over these steps.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from ..logs import get_logger
from .backends import Backend, estimate_tokens, prompt_tokens
from .calls import Call, DeploymentState, Observer, Tiers, tiers, weighted
from .config import Deployment, Policy
from .errors import BackendFailed, BackendTimeout, CloudForbidden, NoDeployment, UnknownAlias
from .health import Breaker, Limiter
from .types import Attempt, ChatRequest, ChatResponse, Completion, Usage

if TYPE_CHECKING:
    from ..cluster.limits import SharedBreakers
    from ..cluster.link import Cluster

log = get_logger("harkd.router")

class Attempts:
    """Breakers, limits and the attempt bookkeeping of one router's deployments."""

    def __init__(self, aliases: Mapping[str, tuple[Deployment, ...]], policy: Policy,
                 observers: list[Observer], recent: collections.deque[dict[str, Any]]
                 ) -> None:
        self.policy = policy
        self.observers = observers
        #: the latest failed attempts, newest last
        self.recent = recent
        self.deployments = dict(aliases)
        self._tiers: dict[str, Tiers] = {alias: tiers(deps) for alias, deps in aliases.items()}
        self.states = {
            d.id: DeploymentState(Breaker(policy.failures, policy.cooldown),
                                  Limiter(d.max_concurrent, d.rpm, d.tpm) if d.limited else None)
            for deps in aliases.values() for d in deps}
        self._waiters: list[asyncio.Future[None]] = []
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        #: in a cluster (:meth:`share`): the Redis link and the breakers it spreads
        self.cluster: Cluster | None = None
        self.breakers: SharedBreakers | None = None

    def share(self, cluster: Cluster) -> None:
        """Count limits in Redis and spread breaker changes to the other replicas."""
        from ..cluster.limits import SharedBreakers, SharedLimit, dep_key

        breakers: dict[str, Breaker] = {}
        for deps in self.deployments.values():
            for d in deps:
                state = self.states[d.id]
                state.key = dep_key(d)
                breakers[state.key] = state.breaker
                if state.limiter is not None:
                    state.shared = SharedLimit(cluster, d)
        self.cluster = cluster
        self.breakers = SharedBreakers(cluster, breakers)

    def begin(self, req: ChatRequest, stream: bool) -> Call:
        """One call in flight (the router's ``aclose`` waits for it); :meth:`end` it.
        Not a context manager: a generator-based one costs a microsecond per call."""
        self.inflight += 1
        self.idle.clear()
        return Call(req, stream, self.policy.queue_timeout)

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    # -- choosing deployments -----------------------------------------------------------

    def plan(self, req: ChatRequest) -> Tiers:
        """The alias's tiers, without cloud deployments when the request forbids them."""
        found = self._tiers.get(req.model)
        if found is None:
            raise UnknownAlias(req.model, self.deployments)
        if not req.allow_cloud:
            found = tuple(t for t in (tuple(d for d in tier if not d.cloud) for tier in found)
                          if t)
            if not found:
                raise CloudForbidden(req.model)
        return found

    async def admitted(self, tier: tuple[Deployment, ...], call: Call
                       ) -> AsyncGenerator[tuple[Deployment, DeploymentState], None]:
        """The deployments of one tier to try, in weighted order, each with its limiter
        slot taken; waits for a slot while the whole tier is busy and the call's queue
        deadline allows. Give each back with :meth:`release`."""
        pending = list(tier) if len(tier) == 1 else weighted(tier)
        while pending:
            now = time.monotonic()
            chosen: Deployment | None = None
            wait: float | None = None
            busy = False
            for dep in pending:
                state = self.states[dep.id]
                if not state.breaker.available(now):
                    continue
                if state.limiter is not None:
                    hint = await self._limit_hint(state, call, now)
                    if hint != 0.0:
                        busy = True
                        if hint is not None:
                            wait = hint if wait is None else min(wait, hint)
                        continue
                chosen = dep
                break
            if chosen is not None:
                pending.remove(chosen)
                state = self.states[chosen.id]
                if not state.breaker.allow(now):
                    self._give_back(state, call, None)
                    continue
                if state.limiter is not None:
                    state.limiter.acquire(now, call.tokens())
                yield chosen, state
                continue
            if not busy:
                for dep in pending:
                    self.skip(dep, call, "cooldown", "cooling down after repeated failures")
                return
            left = call.deadline - now
            if left <= 0 or len(self._waiters) >= self.policy.queue:
                why = "queue_timeout" if left <= 0 else "queue_full"
                for dep in pending:
                    self.skip(dep, call, why, "over its limits (max_concurrent, rpm or tpm) "
                              f"and the wait for a slot ended ({why})")
                return
            await self._wait_capacity(left if wait is None else min(left, wait + 0.001))

    def release(self, state: DeploymentState, call: Call) -> None:
        """The call is done with this deployment: free its limit slot, wake waiters."""
        if state.breaker.state == "half_open":
            state.breaker.release_probe()  # the call ended without a verdict
        if state.limiter is None:
            return
        used = call.attempts[-1].prompt_tokens + call.attempts[-1].completion_tokens \
            if call.attempts and call.attempts[-1].outcome == "ok" else None
        state.limiter.release(call.tokens(), used)
        self._give_back(state, call, used)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_capacity(self, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait((fut,), timeout=timeout)
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def _limit_hint(self, state: DeploymentState, call: Call, now: float) -> float | None:
        """As :meth:`Limiter.wait_hint`; in a cluster the limits are counted in Redis
        (a 0 there takes the slot: ``call.lease``), or, while Redis is down, this
        replica keeps its share of them."""
        assert state.limiter is not None
        if state.shared is not None and self.cluster is not None:
            from ..cluster.limits import POLL
            from ..cluster.link import Unavailable

            try:
                hint, call.lease = await state.shared.acquire(call.tokens())
            except Unavailable:
                state.limiter.share = self.cluster.replicas
            else:
                state.limiter.share = 1
                # Another replica's finishing call wakes no one here: ask again soon.
                return POLL if hint is None else hint
        return state.limiter.wait_hint(now, call.tokens())

    def _give_back(self, state: DeploymentState, call: Call, used: int | None) -> None:
        if call.lease is not None and state.shared is not None:
            state.shared.release(call.lease, call.tokens(), used)
        call.lease = None

    # -- the end of an attempt ------------------------------------------------------------

    async def prepare(self, backend: Backend, dep: Deployment, state: DeploymentState,
                      call: Call) -> str | None:
        """The backend's base URL for ``dep``, or None (recorded as a failure) if it has
        none now (a local model that will not start)."""
        try:
            return await backend.prepare(dep)
        except BackendFailed as exc:
            self.failed(dep, state, call, exc, 1, 0.0)
            return None

    def failed(self, dep: Deployment, state: DeploymentState, call: Call, exc: BackendFailed,
               attempt: int, took: float) -> float | None:
        """Record a failed attempt; the delay before retrying, or None to move on."""
        now = time.monotonic()
        was = (state.breaker.state, state.breaker.until)
        if exc.breaker:
            state.breaker.failure(now)
        else:
            state.breaker.release_probe()
        outcome: Any = exc.outcome
        record = Attempt(call.alias, dep.label, dep.id, dep.provider, attempt, outcome, took,
                         status=exc.upstream_status, error=exc.message,
                         fallback=call.reason, stream=call.stream)
        call.attempts.append(record)
        self._observe(record)
        self.recent.append({"at": time.time(), "alias": call.alias, "deployment": dep.label,
                            "attempt": attempt, "outcome": outcome,
                            "status": exc.upstream_status, "error": exc.message})
        log.warning("llm_attempt_failed", alias=call.alias, deployment=dep.label,
                    attempt=attempt, outcome=outcome, status=exc.upstream_status,
                    error=exc.message)
        delay = self._retry_delay(exc, attempt, state, now)
        if delay is None:
            call.reason = outcome
            call.errors.append((dep, exc.message, exc))
        if self.breakers is not None and state.breaker.state == "open" \
                and (state.breaker.state, state.breaker.until) != was:
            self.breakers.opened(state.key, state.breaker)
        return delay

    def _retry_delay(self, exc: BackendFailed, attempt: int, state: DeploymentState,
                     now: float) -> float | None:
        p = self.policy
        after = exc.retry_after
        if after is not None and after > p.max_retry_after:
            state.breaker.hold(now, after)
            return None
        if (not exc.retryable or isinstance(exc, BackendTimeout) or attempt > p.retries
                or state.breaker.state == "open"):
            if after is not None:
                state.breaker.hold(now, after)
            return None
        delay = min(p.max_backoff, p.backoff * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        return float(max(delay, after or 0.0))

    def answered(self, dep: Deployment, state: DeploymentState, call: Call, out: Completion,
                 latency: float, ttft: float | None, took: float, attempt: int
                 ) -> ChatResponse:
        """A successful attempt: close the breaker, record it, and build the answer."""
        spread = self.breakers is not None and state.breaker.state != "closed"
        state.breaker.success()
        if spread and self.breakers is not None:
            self.breakers.closed(state.key)
        usage = out.usage or Usage(prompt_tokens(call.req), estimate_tokens(out.text), True)
        record = Attempt(call.alias, dep.label, dep.id, dep.provider, attempt, "ok", took,
                         ttft, usage.prompt_tokens, usage.completion_tokens,
                         fallback=call.reason, stream=call.stream)
        call.attempts.append(record)
        self._observe(record)
        if call.reason is not None:
            log.debug("llm_fallback_answered", alias=call.alias, deployment=dep.label,
                      reason=call.reason, attempts=len(call.attempts))
        return ChatResponse(out.text, call.alias, dep.label, usage, latency, ttft,
                            out.finish_reason, out.tool_calls, tuple(call.attempts))

    def skip(self, dep: Deployment, call: Call, reason: str, message: str) -> None:
        """Record passing over a deployment without calling it (cooling down, busy)."""
        record = Attempt(call.alias, dep.label, dep.id, dep.provider, 0, "skipped",
                         error=message, fallback=call.reason, stream=call.stream)
        call.attempts.append(record)
        call.errors.append((dep, message, None))
        call.reason = reason
        self._observe(record)

    def exhausted(self, call: Call) -> NoDeployment:
        """The error of a call that no deployment answered: 504 when every attempt timed
        out, 429 (with Retry-After) when they were all busy or rate limited, else 502."""
        reasons = "; ".join(f"{dep.label}: {msg}" for dep, msg, _ in call.errors) or \
            "no deployment was tried"
        outcomes = {a.outcome for a in call.attempts if a.outcome != "ok"}
        status, after = 502, None
        if outcomes == {"timeout"}:
            status = 504
        elif call.reason in ("queue_timeout", "queue_full") or outcomes == {"rate_limited"}:
            status = 429
            afters = [e.retry_after for _, _, e in call.errors
                      if e is not None and e.retry_after is not None]
            after = min(afters) if afters else 1.0
        log.warning("llm_call_failed", alias=call.alias, attempts=len(call.attempts),
                    reason=call.reason)
        return NoDeployment(f"every deployment of model alias {call.alias!r} failed: "
                            f"{reasons}", status=status, retry_after=after,
                            attempts=tuple(call.attempts))

    def _observe(self, attempt: Attempt) -> None:
        for fn in self.observers:
            fn(attempt)
