"""Streamed calls: text chunks as they come, with fallback until the first token.

A :class:`ChatStream` walks the alias's deployments like a whole call
(:mod:`harkd.router.attempts`), but a deployment counts as answering only once it sends
its first token within ``first_token_timeout``; before that a failure moves on unseen by
the reader, after it the failure is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from .attempts import Attempts
from .backends import Backend
from .cache import Cache
from .calls import Call, Deadline, DeploymentState
from .config import Deployment
from .errors import BackendFailed, BackendTimeout
from .types import ChatRequest, ChatResponse, Completion, Delta, ToolCall, Usage


class ChatStream:
    """The text chunks of one streamed call; ``response`` is set once it has ended.

    If a deployment fails before its first token (or sends none within
    ``first_token_timeout``), the next one takes over unseen by the reader.
    """

    def __init__(self, attempts: Attempts, backend: Callable[[Deployment], Backend],
                 cache: Cache | None, req: ChatRequest) -> None:
        self.attempts = attempts
        self.backend = backend
        self.cache = cache
        self.req = req
        self.response: ChatResponse | None = None
        self._gen: AsyncGenerator[str, None] | None = None

    def __aiter__(self) -> ChatStream:
        return self

    def __anext__(self) -> Awaitable[str]:
        # The generator's own awaitable, not a coroutine around it (a frame a chunk);
        # without a cache, the routing generator itself.
        gen = self._gen
        if gen is None:
            gen = self._gen = self._chunks() if self.cache is not None else self._routed()
        return gen.__anext__()

    async def aclose(self) -> None:
        gen = self._gen
        if gen is not None:
            await gen.aclose()

    async def collect(self) -> ChatResponse:
        """Read to the end; the response."""
        async for _ in self:
            pass
        assert self.response is not None
        return self.response

    async def _chunks(self) -> AsyncGenerator[str, None]:
        cache = self.cache
        hit = await cache.lookup(self.req) if cache is not None else None
        if hit is not None:
            self.response = hit
            yield hit.text
            return
        async for chunk in self._routed():
            yield chunk
        if cache is not None and self.response is not None:
            await cache.remember(self.req, self.response)  # only a stream that ended whole

    async def _routed(self) -> AsyncGenerator[str, None]:
        at = self.attempts
        tiers = at.plan(self.req)
        call = at.begin(self.req, stream=True)
        try:
            t0 = time.perf_counter()
            for tier in tiers:
                async with contextlib.aclosing(at.admitted(tier, call)) as admitted:
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
                            at.release(state, call)
            raise at.exhausted(call)
        finally:
            at.end()

    async def _open(self, dep: Deployment, state: DeploymentState, call: Call
                    ) -> tuple[AsyncIterator[Delta], Delta | None, int, float] | None:
        """Start the stream and wait for its first token, retrying as the policy says."""
        at = self.attempts
        backend = self.backend(dep)
        base = await at.prepare(backend, dep, state, call)
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
            delay = at.failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
            if delay is None:
                return None
            await asyncio.sleep(delay)

    async def _rest(self, dep: Deployment, state: DeploymentState, call: Call,
                    agen: AsyncIterator[Delta], first: Delta | None, attempt: int, ta: float,
                    t0: float) -> AsyncIterator[str]:
        at = self.attempts
        ttft = time.perf_counter() - ta
        acc = _Accumulator()
        # One timer for the rest of the stream, armed only while waiting for the upstream
        # (asyncio.timeout_at per chunk cost 4 µs a chunk)
        deadline = Deadline(max(0.0, dep.timeout - ttft), armed=False)
        try:
            delta = first
            while delta is not None:
                acc.add(delta)
                if delta.text:
                    yield delta.text
                try:
                    delta = await _next(agen, deadline)
                except TimeoutError:
                    exc: BackendFailed = BackendTimeout(
                        f"{dep.label} did not finish its stream within {dep.timeout:g}s")
                    at.failed(dep, state, call, exc, attempt, time.perf_counter() - ta)
                    raise exc from None
                except BackendFailed as failed:
                    at.failed(dep, state, call, failed, attempt, time.perf_counter() - ta)
                    raise
        finally:
            deadline.cancel()
            await _close(agen)
        now = time.perf_counter()
        self.response = at.answered(dep, state, call, acc.completion(), now - t0, ttft,
                                    now - ta, attempt)


async def _next(agen: AsyncIterator[Delta], deadline: Deadline) -> Delta | None:
    """The next delta (None at the end); TimeoutError if the deadline passes while
    waiting for it (or passed while the reader held the last one, and it is not here yet)."""
    if deadline.fired:
        deadline.refire()
    deadline.arm()
    try:
        return await anext(agen, None)
    except asyncio.CancelledError:
        if deadline.expired():
            raise TimeoutError from None
        raise
    finally:
        deadline.disarm()


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
