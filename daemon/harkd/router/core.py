"""The router: one per daemon, shared by every pipeline and the gateway.

An alias is an ordered fallback chain of tiers; the deployments of one tier share load by
weight. For each call the router walks the chain: it passes over deployments that are
cooling down, waits (up to ``queue_timeout``, shared by the whole call) for a slot when a
tier is at its limits, retries retryable failures with exponential backoff and jitter
(honouring ``Retry-After``), and moves to the next deployment when one gives up. A stream
can move on only until its first token; after that its failure is the caller's.

This module builds the router and answers whole calls; :mod:`harkd.router.attempts`
chooses deployments and keeps breakers, limits and attempts; :mod:`harkd.router.streaming`
answers streamed calls; :mod:`harkd.router.health` holds the breaker and the limiter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..contracts import ROUTER_OBSERVERS
from ..logs import get_logger
from .attempts import Attempts
from .backends import Backend, SessionPool
from .cache import Cache
from .cache import build as build_cache
from .calls import Call, Deadline, DeploymentState, Observer, health
from .config import Deployment, Policy, parse, parse_policy
from .errors import BackendFailed, BackendTimeout, UnknownAlias
from .streaming import ChatStream
from .types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from ..contracts import Services
    from ..settings import Settings

log = get_logger("harkd.router")

POOL_KEY = "router_sessions"
OBSERVERS_KEY = ROUTER_OBSERVERS
RECENT_KEY = "router_recent_errors"
#: how many failed attempts :meth:`Router.report` remembers
RECENT = 50


def router_observers(services: Services) -> list[Observer]:
    """The observer list every router of this daemon reports to (it survives reloads)."""
    observers: list[Observer] = services.shared.setdefault(OBSERVERS_KEY, [])
    return observers


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
        #: by provider; ``backends`` adds providers of its own (``harkd test``'s replies)
        self._backends: dict[str, Backend] = dict(backends or {})
        #: each deployment's backend, by its id, once chosen
        self._chosen: dict[str, Backend] = {}
        #: the response cache (router.cache), None when not configured
        self.cache: Cache | None = None
        #: the latest failed attempts, newest last (shared by the routers of one daemon)
        recent: collections.deque[dict[str, Any]] = (
            services.shared.setdefault(RECENT_KEY, collections.deque(maxlen=RECENT))
            if services is not None else collections.deque(maxlen=RECENT))
        #: breakers, limits and the bookkeeping of every attempt
        self.attempts = Attempts(aliases, policy, self.observers, recent)

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
            router.attempts.share(link)
        return router

    # -- what is configured -----------------------------------------------------------

    def aliases(self) -> list[str]:
        return sorted(self.attempts.deployments)

    def deployments(self, alias: str) -> tuple[Deployment, ...]:
        deps = self.attempts.deployments.get(alias)
        if deps is None:
            raise UnknownAlias(alias, self.attempts.deployments)
        return deps

    def status(self) -> dict[str, list[dict[str, Any]]]:
        """Each deployment's breaker, health and load, by alias (no secrets)."""
        now = time.monotonic()
        out: dict[str, list[dict[str, Any]]] = {}
        for alias, deps in self.attempts.deployments.items():
            rows = []
            for d in deps:
                st = self.attempts.states[d.id]
                b = st.breaker
                rows.append({"deployment": d.label, "provider": d.provider, "tier": d.tier,
                             "weight": d.weight, "cloud": d.cloud, "breaker": b.state,
                             "health": health(b, now), "failures": b.consecutive,
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
                "recent_errors": list(reversed(self.attempts.recent)),
                "inflight": self.attempts.inflight,
                "policy": dataclasses.asdict(self.policy)}

    def backend(self, dep: Deployment) -> Backend:
        backend = self._chosen.get(dep.id)
        if backend is None:
            kind = dep.provider if dep.native or dep.provider in self._backends else "litellm"
            backend = self._backends.get(kind)
            if backend is None:
                backend = self._backends[kind] = self._make_backend(kind)
            self._chosen[dep.id] = backend
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

    def complete(self, req: ChatRequest) -> Coroutine[Any, Any, ChatResponse]:
        """One call, answered whole (await it). Raises UnknownAlias, CloudForbidden or
        NoDeployment. Without a cache it is the routing coroutine itself: a coroutine
        around it cost a frame per call."""
        if self.cache is None:
            return self._complete(req)
        return self._cached(req, self.cache)

    async def _cached(self, req: ChatRequest, cache: Cache) -> ChatResponse:
        hit = await cache.lookup(req)
        if hit is not None:
            return hit
        response = await self._complete(req)
        await cache.remember(req, response)
        return response

    async def _complete(self, req: ChatRequest) -> ChatResponse:
        at = self.attempts
        tiers = at.plan(req)
        call = at.begin(req, stream=False)
        try:
            t0 = time.perf_counter()
            for tier in tiers:
                if len(tier) == 1 and at.states[tier[0].id].limiter is None:
                    # The common case (one deployment, no limits) skips the queue machinery.
                    dep = tier[0]
                    state = at.states[dep.id]
                    if not state.breaker.allow(time.monotonic()):
                        at.skip(dep, call, "cooldown", "cooling down after repeated failures")
                        continue
                    try:
                        response = await self._try_complete(dep, state, call, t0)
                    finally:
                        at.release(state, call)
                    if response is not None:
                        return response
                    continue
                async with contextlib.aclosing(at.admitted(tier, call)) as admitted:
                    async for dep, state in admitted:
                        try:
                            response = await self._try_complete(dep, state, call, t0)
                        finally:
                            at.release(state, call)
                        if response is not None:
                            return response
            raise at.exhausted(call)
        finally:
            at.end()

    def stream(self, req: ChatRequest) -> ChatStream:
        """One call, streamed: iterate the returned object for text chunks; its
        ``response`` is set once the stream has ended."""
        return ChatStream(self.attempts, self.backend, self.cache, req)

    async def _try_complete(self, dep: Deployment, state: DeploymentState, call: Call,
                            t0: float) -> ChatResponse | None:
        at = self.attempts
        backend = self.backend(dep)
        base = await at.prepare(backend, dep, state, call)
        if base is None:
            return None
        attempt = 0
        while True:
            attempt += 1
            ta = time.perf_counter()
            deadline = Deadline(dep.timeout)
            try:
                out = await backend.complete(dep, base, call.req)
            except asyncio.CancelledError:
                if not deadline.expired():
                    raise
                exc: BackendFailed = BackendTimeout(
                    f"{dep.label} did not answer within {dep.timeout:g}s")
            except BackendFailed as failed:
                exc = failed
            else:
                now = time.perf_counter()
                return at.answered(dep, state, call, out, now - t0, None, now - ta, attempt)
            finally:
                deadline.cancel()
            delay = at.failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
            if delay is None:
                return None
            await asyncio.sleep(delay)

    async def aclose(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for calls in flight, then close what it owns."""
        if grace > 0 and self.attempts.inflight:
            try:
                async with asyncio.timeout(grace):
                    await self.attempts.idle.wait()
            except TimeoutError:
                log.warning("router_closed_busy", inflight=self.attempts.inflight)
        if self._owns_pool:
            await self.pool.aclose()
