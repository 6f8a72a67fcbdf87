"""The backend contract, the pooled client sessions, and helpers every backend shares.

A backend speaks one wire protocol (OpenAI-compatible, Ollama, LiteLLM); the router holds
one of each it needs and passes the deployment on every call, so backends keep no
per-deployment state. Timeouts, retries and fallback are the router's, not theirs.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..secrets import REDACTOR
from .errors import BackendFailed
from .wire import WireError, WirePool

if TYPE_CHECKING:
    import aiohttp

    from .config import Deployment
    from .types import ChatRequest, Completion, Delta


class Backend(Protocol):
    """Speaks one wire protocol to any number of deployments.

    ``prepare`` runs outside the call's timeout and returns the base URL to use (the
    embedded model starts there on first use); ``complete`` and ``stream`` raise
    :class:`~harkd.router.errors.BackendFailed` for anything that went wrong upstream.
    ``stream`` yields only meaningful deltas, then one with the usage if the server sent it.
    """

    async def prepare(self, dep: Deployment) -> str: ...

    async def complete(self, dep: Deployment, base: str, req: ChatRequest) -> Completion: ...

    def stream(self, dep: Deployment, base: str, req: ChatRequest) -> AsyncIterator[Delta]: ...


class SessionPool:
    """One pooled aiohttp session per base URL, kept across router rebuilds."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        #: whole (not streamed) calls to http(s) bases: see :mod:`harkd.router.wire`
        self.wire = WirePool()

    def get(self, base: str) -> aiohttp.ClientSession:
        session = self._sessions.get(base)
        if session is None or session.closed:
            import aiohttp  # here, not at import: a router of test replies needs no client

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0,
                                               keepalive_timeout=60, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": "harkd"},
            )
            self._sessions[base] = session
        return session

    async def aclose(self) -> None:
        self.wire.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def http_error(dep: Deployment, status: int, body: bytes,
               headers: Any = None) -> BackendFailed:
    """The :class:`BackendFailed` that fits an upstream error status."""
    snippet = REDACTOR(_error_text(body))[:300]
    where = f"{dep.label} answered {status}"
    if status == 429:
        after = retry_after(headers.get("Retry-After") if headers is not None else None)
        return BackendFailed(f"{where} (rate limited): {snippet}", status=status,
                             retry_after=after)
    if status in (401, 403):
        return BackendFailed(f"{where}: the API key was rejected: {snippet}", status=status,
                             retryable=False)
    if status == 404:
        return BackendFailed(f"{where}: model or endpoint not found: {snippet}",
                             status=status, retryable=False)
    if status in (408, 409, 425) or status >= 500:
        return BackendFailed(f"{where}: {snippet}", status=status)
    return BackendFailed(f"{where}: {snippet}", status=status, retryable=False, breaker=False)


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return text


async def post(pool: SessionPool, dep: Deployment, base: str, path: str, data: bytes,
               headers: Mapping[str, str]) -> bytes:
    """POST to ``base + path`` over the pooled connections; the raw answer. HTTP errors and
    connection failures raise the router's :class:`BackendFailed`."""
    origin = pool.wire.origin(base)
    if origin is not None:
        try:
            answer = await pool.wire.post(origin, path, data, headers)
        except WireError as exc:
            raise connection_error(dep, exc) from None
        if answer.status >= 400:
            raise http_error(dep, answer.status, answer.body, answer.headers)
        return answer.body
    import aiohttp

    try:
        async with pool.get(base).post(base + path, data=data, headers=dict(headers)) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise http_error(dep, resp.status, raw, resp.headers)
            return raw
    except aiohttp.ClientError as exc:
        raise connection_error(dep, exc) from None


def connection_error(dep: Deployment, exc: BaseException) -> BackendFailed:
    return BackendFailed(f"{dep.label} is unreachable: {type(exc).__name__}: "
                         f"{REDACTOR(str(exc))[:200]}")


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) for limits and unreported usage."""
    return max(1, len(text) // 4)


def prompt_tokens(req: ChatRequest) -> int:
    total = 0
    for m in req.messages:
        content = m.get("content")
        total += 4 + (len(content) // 4 if isinstance(content, str)
                      else len(json.dumps(content)) // 4)
    return total
