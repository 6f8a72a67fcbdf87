"""The router: one per daemon, shared by every pipeline and the gateway.

An alias is an ordered fallback chain of tiers; the deployments of one tier share load by
weight. For each call the router walks the chain: it passes over deployments that are
cooling down, waits (up to ``queue_timeout``, shared by the whole call) for a slot when a
tier is at its limits, retries retryable failures with exponential backoff and jitter
(honouring ``Retry-After``), and moves to the next deployment when one gives up. A stream
can move on only until its first token; after that its failure is the caller's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .backends import Backend, SessionPool, estimate_tokens, prompt_tokens
from .cache import Cache
from .cache import build as build_cache
from .config import Deployment, Policy, parse, parse_policy
from .errors import BackendFailed, BackendTimeout, CloudForbidden, NoDeployment, UnknownAlias
from .health import Breaker, Limiter
from .types import Attempt, ChatRequest, ChatResponse, Completion, Delta, ToolCall, Usage

if TYPE_CHECKING:
    from ..cluster.limits import SharedBreakers, SharedLimit
    from ..cluster.link import Cluster
    from ..contracts import Services
    from ..settings import Settings

log = structlog.get_logger("harkd.router")

Observer = Callable[[Attempt], None]
POOL_KEY = "router_sessions"
OBSERVERS_KEY = "router_observers"
RECENT_KEY = "router_recent_errors"
#: how many failed attempts :meth:`Router.report` remembers
RECENT = 50


def router_observers(services: Services) -> list[Observer]:
    """The observer list every router of this daemon reports to (it survives reloads)."""
    observers: list[Observer] = services.shared.setdefault(OBSERVERS_KEY, [])
    return observers


@dataclass
class _State:
    breaker: Breaker
    limiter: Limiter | None
    #: in a cluster: the limits counted in Redis, and the deployment's name there
    shared: SharedLimit | None = None
    key: str = ""


class _Call:
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


class Router:
    """Routes chat calls over the deployments of ``models:``. See the module docstring.

    ``observers`` are called with every :class:`Attempt` (metrics count calls by
    deployment and outcome, time to first token and fallbacks from them).
    """

    def __init__(self, aliases: Mapping[str, tuple[Deployment, ...]], policy: Policy,
                 services: Services | None = None, *, pool: SessionPool | None = None,
                 observers: list[Observer] | None = None,
                 backends: Mapping[str, Backend] | None = None) -> None:
        self.policy = policy
        self.services = services
        self._owns_pool = pool is None
        self.pool = pool or SessionPool()
        self.observers: list[Observer] = observers if observers is not None else []
        self._deployments = dict(aliases)
        self._tiers: dict[str, tuple[tuple[Deployment, ...], ...]] = {
            alias: _tiers(deps) for alias, deps in aliases.items()}
        self._states = {
            d.id: _State(Breaker(policy.failures, policy.cooldown),
                         Limiter(d.max_concurrent, d.rpm, d.tpm) if d.limited else None)
            for deps in aliases.values() for d in deps}
        #: by provider; ``backends`` adds providers of its own (``harkd test``'s replies)
        self._backends: dict[str, Backend] = dict(backends or {})
        self._waiters: list[asyncio.Future[None]] = []
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: the response cache (router.cache), None when not configured
        self.cache: Cache | None = None
        #: in a cluster (:meth:`share`): the Redis link and the breakers it spreads
        self.cluster: Cluster | None = None
        self.breakers: SharedBreakers | None = None
        #: the latest failed attempts, newest last (shared by the routers of one daemon)
        self.recent: collections.deque[dict[str, Any]] = (
            services.shared.setdefault(RECENT_KEY, collections.deque(maxlen=RECENT))
            if services is not None else collections.deque(maxlen=RECENT))

    @classmethod
    def from_settings(cls, settings: Settings, services: Services | None = None) -> Router:
        """Build from ``models:`` and ``router:``; sessions and observers live in
        ``services.shared`` so that a rebuilt router keeps both."""
        policy = parse_policy(settings.router)
        aliases = parse(settings.models, policy)
        from ..cluster import of as cluster_of

        link = cluster_of(services) if services is not None else None
        shared = None
        if link is not None:
            from ..cluster.cache import RedisStore

            shared = functools.partial(RedisStore, link)
        cache = build_cache(settings.router.get("cache"), settings.state, shared)
        if services is None:
            router = cls(aliases, policy)
        else:
            pool = services.shared.get(POOL_KEY)
            if pool is None:
                pool = services.shared[POOL_KEY] = SessionPool()
            router = cls(aliases, policy, services, pool=pool,
                         observers=router_observers(services))
        router.cache = cache
        if link is not None:
            router.share(link)
        return router

    def share(self, cluster: Cluster) -> None:
        """Count limits in Redis and spread breaker changes to the other replicas."""
        from ..cluster.limits import SharedBreakers, SharedLimit, dep_key

        breakers: dict[str, Breaker] = {}
        for deps in self._deployments.values():
            for d in deps:
                state = self._states[d.id]
                state.key = dep_key(d)
                breakers[state.key] = state.breaker
                if state.limiter is not None:
                    state.shared = SharedLimit(cluster, d)
        self.cluster = cluster
        self.breakers = SharedBreakers(cluster, breakers)

    # -- what is configured -----------------------------------------------------------

    def aliases(self) -> list[str]:
        return sorted(self._deployments)

    def deployments(self, alias: str) -> tuple[Deployment, ...]:
        deps = self._deployments.get(alias)
        if deps is None:
            raise UnknownAlias(alias, self._deployments)
        return deps

    def status(self) -> dict[str, list[dict[str, Any]]]:
        """Each deployment's breaker, health and load, by alias (no secrets)."""
        now = time.monotonic()
        out: dict[str, list[dict[str, Any]]] = {}
        for alias, deps in self._deployments.items():
            rows = []
            for d in deps:
                st = self._states[d.id]
                b = st.breaker
                rows.append({"deployment": d.label, "provider": d.provider, "tier": d.tier,
                             "weight": d.weight, "cloud": d.cloud, "breaker": b.state,
                             "health": _health(b, now), "failures": b.consecutive,
                             "cooldown_left": max(0.0, round(b.until - now, 2))
                             if b.state == "open" else 0.0,
                             "active": st.limiter.active if st.limiter else None,
                             "limits": {"rpm": d.rpm, "tpm": d.tpm,
                                        "max_concurrent": d.max_concurrent},
                             "timeout": d.timeout})
            out[alias] = rows
        return out

    def report(self) -> dict[str, Any]:
        """What ``GET /api/router`` answers: :meth:`status` by alias, the open breakers
        with their cooldowns, the latest failed attempts (newest first) and the policy."""
        aliases = self.status()
        open_ = [{"alias": a, "deployment": r["deployment"], "cooldown_left": r["cooldown_left"]}
                 for a, rows in aliases.items() for r in rows if r["breaker"] != "closed"]
        return {"aliases": aliases, "open_breakers": open_,
                "recent_errors": list(reversed(self.recent)), "inflight": self._inflight,
                "policy": dataclasses.asdict(self.policy)}

    def backend(self, dep: Deployment) -> Backend:
        kind = dep.provider if dep.native or dep.provider in self._backends else "litellm"
        backend = self._backends.get(kind)
        if backend is None:
            backend = self._backends[kind] = self._make_backend(kind)
        return backend

    def _make_backend(self, kind: str) -> Backend:
        from .openai import OpenAIBackend

        if kind == "openai":
            return OpenAIBackend(self.pool)
        if kind == "ollama":
            from .ollama import OllamaBackend

            return OllamaBackend(self.pool)
        if kind == "local":
            from .local import LocalBackend

            return LocalBackend(self.backend_openai(), self.services)
        from .litellm_backend import LiteLLMBackend

        return LiteLLMBackend()

    def backend_openai(self) -> Any:
        backend = self._backends.get("openai")
        if backend is None:
            backend = self._backends["openai"] = self._make_backend("openai")
        return backend

    # -- calls ------------------------------------------------------------------------

    async def complete(self, req: ChatRequest) -> ChatResponse:
        """One call, answered whole. Raises UnknownAlias, CloudForbidden or NoDeployment."""
        if self.cache is None:
            return await self._complete(req)
        hit = await self.cache.lookup(req)
        if hit is not None:
            return hit
        response = await self._complete(req)
        await self.cache.remember(req, response)
        return response

    async def _complete(self, req: ChatRequest) -> ChatResponse:
        tiers = self._plan(req)
        call = _Call(req, False, self.policy.queue_timeout)
        self._enter()
        try:
            t0 = time.perf_counter()
            for tier in tiers:
                if len(tier) == 1 and self._states[tier[0].id].limiter is None:
                    # The common case (one deployment, no limits) skips the queue machinery.
                    dep = tier[0]
                    state = self._states[dep.id]
                    if not state.breaker.allow(time.monotonic()):
                        self._skip(dep, call, "cooldown", "cooling down after repeated failures")
                        continue
                    try:
                        response = await self._try_complete(dep, state, call, t0)
                    finally:
                        self._release(state, call)
                    if response is not None:
                        return response
                    continue
                async with contextlib.aclosing(self._admitted(tier, call)) as admitted:
                    async for dep, state in admitted:
                        try:
                            response = await self._try_complete(dep, state, call, t0)
                        finally:
                            self._release(state, call)
                        if response is not None:
                            return response
            raise self._exhausted(call)
        finally:
            self._exit()

    def stream(self, req: ChatRequest) -> ChatStream:
        """One call, streamed: iterate the returned object for text chunks; its
        ``response`` is set once the stream has ended."""
        return ChatStream(self, req)

    async def _try_complete(self, dep: Deployment, state: _State, call: _Call,
                            t0: float) -> ChatResponse | None:
        backend = self.backend(dep)
        base = await self._prepare(backend, dep, state, call)
        if base is None:
            return None
        attempt = 0
        while True:
            attempt += 1
            ta = time.perf_counter()
            try:
                async with asyncio.timeout(dep.timeout):
                    out = await backend.complete(dep, base, call.req)
            except TimeoutError:
                exc: BackendFailed = BackendTimeout(
                    f"{dep.label} did not answer within {dep.timeout:g}s")
            except BackendFailed as failed:
                exc = failed
            else:
                now = time.perf_counter()
                self._succeeded(state)
                return self._respond(dep, call, out, now - t0, None, now - ta, attempt)
            delay = self._failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
            if delay is None:
                return None
            await asyncio.sleep(delay)

    def _respond(self, dep: Deployment, call: _Call, out: Completion, latency: float,
                 ttft: float | None, took: float, attempt: int) -> ChatResponse:
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

    async def _prepare(self, backend: Backend, dep: Deployment, state: _State,
                       call: _Call) -> str | None:
        try:
            return await backend.prepare(dep)
        except BackendFailed as exc:
            self._failed(dep, state, call, exc, 1, 0.0)
            return None

    def _failed(self, dep: Deployment, state: _State, call: _Call, exc: BackendFailed,
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

    def _succeeded(self, state: _State) -> None:
        spread = self.breakers is not None and state.breaker.state != "closed"
        state.breaker.success()
        if spread and self.breakers is not None:
            self.breakers.closed(state.key)

    def _retry_delay(self, exc: BackendFailed, attempt: int, state: _State,
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

    # -- choosing deployments -----------------------------------------------------------

    def _plan(self, req: ChatRequest) -> tuple[tuple[Deployment, ...], ...]:
        tiers = self._tiers.get(req.model)
        if tiers is None:
            raise UnknownAlias(req.model, self._deployments)
        if not req.allow_cloud:
            tiers = tuple(t for t in (tuple(d for d in tier if not d.cloud) for tier in tiers)
                          if t)
            if not tiers:
                raise CloudForbidden(req.model)
        return tiers

    async def _admitted(self, tier: tuple[Deployment, ...], call: _Call
                        ) -> AsyncGenerator[tuple[Deployment, _State], None]:
        """The deployments of one tier to try, in weighted order, each with its limiter
        slot taken; waits for a slot while the whole tier is busy and the call's queue
        deadline allows."""
        pending = list(tier) if len(tier) == 1 else _weighted(tier)
        while pending:
            now = time.monotonic()
            chosen: Deployment | None = None
            wait: float | None = None
            busy = False
            for dep in pending:
                state = self._states[dep.id]
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
                state = self._states[chosen.id]
                if not state.breaker.allow(now):
                    self._give_back(state, call, None)
                    continue
                if state.limiter is not None:
                    state.limiter.acquire(now, call.tokens())
                yield chosen, state
                continue
            if not busy:
                for dep in pending:
                    self._skip(dep, call, "cooldown", "cooling down after repeated failures")
                return
            left = call.deadline - now
            if left <= 0 or len(self._waiters) >= self.policy.queue:
                why = "queue_timeout" if left <= 0 else "queue_full"
                for dep in pending:
                    self._skip(dep, call, why, "over its limits (max_concurrent, rpm or tpm) "
                               f"and the wait for a slot ended ({why})")
                return
            await self._wait_capacity(left if wait is None else min(left, wait + 0.001))

    def _skip(self, dep: Deployment, call: _Call, reason: str, message: str) -> None:
        record = Attempt(call.alias, dep.label, dep.id, dep.provider, 0, "skipped",
                         error=message, fallback=call.reason, stream=call.stream)
        call.attempts.append(record)
        call.errors.append((dep, message, None))
        call.reason = reason
        self._observe(record)

    async def _wait_capacity(self, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait((fut,), timeout=timeout)
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def _limit_hint(self, state: _State, call: _Call, now: float) -> float | None:
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

    def _give_back(self, state: _State, call: _Call, used: int | None) -> None:
        if call.lease is not None and state.shared is not None:
            state.shared.release(call.lease, call.tokens(), used)
        call.lease = None

    def _release(self, state: _State, call: _Call) -> None:
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

    def _exhausted(self, call: _Call) -> NoDeployment:
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

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _exit(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def aclose(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for calls in flight, then close what it owns."""
        if grace > 0 and self._inflight:
            try:
                async with asyncio.timeout(grace):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("router_closed_busy", inflight=self._inflight)
        if self._owns_pool:
            await self.pool.aclose()


def _health(breaker: Breaker, now: float) -> str:
    """``ok``, ``failing`` (failed lately, still in rotation), ``cooling`` (breaker open)
    or ``probing`` (one trial call allowed)."""
    if breaker.state == "open":
        return "cooling" if now < breaker.until else "probing"
    if breaker.state == "half_open":
        return "probing"
    return "failing" if breaker.consecutive else "ok"


def _tiers(deps: tuple[Deployment, ...]) -> tuple[tuple[Deployment, ...], ...]:
    order = sorted({d.tier for d in deps})
    return tuple(tuple(d for d in deps if d.tier == t) for t in order)


def _weighted(tier: tuple[Deployment, ...]) -> list[Deployment]:
    """A random order in which each deployment comes first in proportion to its weight."""
    return sorted(tier, key=lambda d: random.random() ** (1.0 / d.weight), reverse=True)


class ChatStream:
    """The text chunks of one streamed call; ``response`` is set once it has ended.

    If a deployment fails before its first token (or sends none within
    ``first_token_timeout``), the next one takes over unseen by the reader.
    """

    def __init__(self, router: Router, req: ChatRequest) -> None:
        self.router = router
        self.req = req
        self.response: ChatResponse | None = None
        self._gen: AsyncIterator[str] | None = None

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if self._gen is None:
            self._gen = self._chunks()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        gen = self._gen
        if gen is not None and hasattr(gen, "aclose"):
            await gen.aclose()

    async def collect(self) -> ChatResponse:
        """Read to the end; the response."""
        async for _ in self:
            pass
        assert self.response is not None
        return self.response

    async def _chunks(self) -> AsyncIterator[str]:
        r = self.router
        cache = r.cache
        hit = await cache.lookup(self.req) if cache is not None else None
        if hit is not None:
            self.response = hit
            yield hit.text
            return
        async for chunk in self._routed():
            yield chunk
        if cache is not None and self.response is not None:
            await cache.remember(self.req, self.response)  # only a stream that ended whole

    async def _routed(self) -> AsyncIterator[str]:
        r = self.router
        tiers = r._plan(self.req)
        call = _Call(self.req, True, r.policy.queue_timeout)
        r._enter()
        try:
            t0 = time.perf_counter()
            for tier in tiers:
                async with contextlib.aclosing(r._admitted(tier, call)) as admitted:
                    async for dep, state in admitted:
                        try:
                            opened = await self._open(dep, state, call)
                            if opened is None:
                                continue
                            agen, first, attempt, ta = opened
                            async for chunk in self._rest(dep, state, call, agen, first,
                                                          attempt, ta, t0):
                                yield chunk
                            return
                        finally:
                            r._release(state, call)
            raise r._exhausted(call)
        finally:
            r._exit()

    async def _open(self, dep: Deployment, state: _State, call: _Call
                    ) -> tuple[AsyncIterator[Delta], Delta | None, int, float] | None:
        """Start the stream and wait for its first token, retrying as the policy says."""
        r = self.router
        backend = r.backend(dep)
        base = await r._prepare(backend, dep, state, call)
        if base is None:
            return None
        attempt = 0
        while True:
            attempt += 1
            ta = time.perf_counter()
            agen = backend.stream(dep, base, call.req)
            limit = min(dep.first_token_timeout, dep.timeout)
            try:
                async with asyncio.timeout(limit):
                    first = await _first(agen)
                return agen, first, attempt, ta
            except TimeoutError:
                exc: BackendFailed = BackendTimeout(
                    f"{dep.label} sent no first token within {limit:g}s")
            except BackendFailed as failed:
                exc = failed
            await _close(agen)
            delay = r._failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
            if delay is None:
                return None
            await asyncio.sleep(delay)

    async def _rest(self, dep: Deployment, state: _State, call: _Call,
                    agen: AsyncIterator[Delta], first: Delta | None, attempt: int, ta: float,
                    t0: float) -> AsyncIterator[str]:
        r = self.router
        ttft = time.perf_counter() - ta
        acc = _Accumulator()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, dep.timeout - ttft)
        try:
            delta = first
            while delta is not None:
                acc.add(delta)
                if delta.text:
                    yield delta.text
                try:
                    async with asyncio.timeout_at(deadline):
                        delta = await anext(agen, None)
                except TimeoutError:
                    exc: BackendFailed = BackendTimeout(
                        f"{dep.label} did not finish its stream within {dep.timeout:g}s")
                    r._failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
                    raise exc from None
                except BackendFailed as failed:
                    r._failed(dep, state, call, failed, attempt, time.perf_counter() - ta)
                    raise
        finally:
            await _close(agen)
        now = time.perf_counter()
        r._succeeded(state)
        self.response = r._respond(dep, call, acc.completion(), now - t0, ttft, now - ta,
                                   attempt)


async def _first(agen: AsyncIterator[Delta]) -> Delta | None:
    """The first meaningful delta, or None if the stream ended without one."""
    async for delta in agen:
        if delta.meaningful:
            return delta
        if delta.usage is not None or delta.finish_reason is not None:
            return delta
    return None


async def _close(agen: AsyncIterator[Delta]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()


class _Accumulator:
    """Joins deltas into a completion (text, tool calls by index, usage)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.usage: Usage | None = None
        self.finish: str | None = None

    def add(self, d: Delta) -> None:
        if d.text:
            self.parts.append(d.text)
        for index, cid, name, args in d.tool_calls:
            slot = self.calls.setdefault(index, ["", "", ""])
            slot[0] = slot[0] or cid
            slot[1] = slot[1] or name
            slot[2] += args
        if d.usage is not None:
            self.usage = d.usage
        if d.finish_reason is not None:
            self.finish = d.finish_reason

    def completion(self) -> Completion:
        calls = tuple(ToolCall(c[0] or f"call_{i}", c[1], c[2])
                      for i, c in sorted(self.calls.items()))
        return Completion("".join(self.parts), self.usage, self.finish, calls)
