"""A small HTTP/1.1 client for the router's calls to OpenAI-compatible servers: one POST,
its answer whole (:meth:`WirePool.post`) or as it arrives (:meth:`WirePool.stream`, for
SSE), on keep-alive connections pooled per origin. The framing of each exchange (the
answer's head, chunks, gzip, reading a stream) is :mod:`.http1`'s.

A gateway request is two HTTP exchanges, and aiohttp's client spent about as much CPU on
the second one (its request and response objects, cookie jar, tracing, redirects, URL
and header merging) as the whole bare server does on the first: about 100 µs more per
call than writing the request and reading the answer here; a streamed answer's lines
cost it three coroutines each. Local model start-up and everything else still use
aiohttp.

A connection is reused only after a complete answer that did not say
``Connection: close`` (:meth:`.http1.Connection.finished`); one that the server closed
while idle is retried once on a new connection, and only when not a byte of an answer
arrived.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, NamedTuple

from .http1 import Answer, Connection, Stale, Streamed, WireError, decoded

__all__ = ["Origin", "WireError", "WirePool"]

#: connections at once, over every origin of a pool (as aiohttp's connector's limit)
LIMIT = 512
#: request heads kept (:meth:`WirePool.post`); more are made anew
MAX_HEADS = 256
#: headers the client always writes itself
_OWN_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class Origin(NamedTuple):
    """Where a base URL's requests go: ``https://api.openai.com/v1`` → TLS to port 443,
    request targets under ``/v1``. A tuple, as it keys the pool's connections and heads:
    hashed three times a call, in C."""

    tls: bool
    host: str
    port: int
    host_header: str
    prefix: str

    @classmethod
    def of(cls, url: str) -> Origin | None:
        """The origin of ``url``, or None for what this client does not speak."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
                or parts.query or parts.fragment:
            return None
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            return None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        if port != (443 if tls else 80):
            shown = f"{shown}:{port}"
        return cls(tls, host, port, shown, parts.path.rstrip("/"))


class WirePool:
    """Keep-alive connections per origin, for every base URL of one router pool."""

    def __init__(self, limit: int = LIMIT, user_agent: str = "harkd") -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._limit = limit
        #: connections that may still be opened or used, and the calls waiting for one
        #: (first come, first served): a counter, not an asyncio.Semaphore, whose
        #: ``async with`` cost three coroutines a call
        self._free = limit
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls: ssl.SSLContext | None = None
        self._user_agent = user_agent
        self._origins: dict[str, Origin | None] = {}
        self._open: set[Connection] = set()
        #: request heads (all but Content-Length) by origin, path and headers: the
        #: backends send the same few again and again
        self._heads: dict[tuple[Origin, str, tuple[tuple[str, str], ...]], bytes] = {}

    def origin(self, base: str) -> Origin | None:
        """The origin of ``base`` (cached), or None if it is not plain http(s)."""
        try:
            return self._origins[base]
        except KeyError:
            origin = self._origins[base] = Origin.of(base)
            return origin

    async def post(self, origin: Origin, path: str, body: bytes,
                   headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``origin.prefix + path``; raises :class:`WireError` (an
        OSError) when the connection fails or the answer is not HTTP."""
        conn, (status, lines, framing, reuse) = await self._sent(origin, path, body, headers)
        try:
            raw = conn.whole()
            if raw is None:
                raw = await conn.rest()
        except BaseException:
            reuse = False  # cancelled (a timeout) or failed mid-answer
            raise
        finally:
            self._done(origin, conn, reuse)
        return Answer(status, lines, decoded(framing, raw))

    @contextlib.asynccontextmanager
    async def stream(self, origin: Origin, path: str, body: bytes,
                     headers: Mapping[str, str]) -> AsyncIterator[Streamed]:
        """POST as :meth:`post` does, and read the answer as it arrives: ``async with``
        gives its :class:`Streamed` once the head is here."""
        conn, (status, lines, framing, reuse) = await self._sent(origin, path, body, headers)
        try:
            yield Streamed(conn, status, lines, framing)
        except BaseException:
            reuse = False
            raise
        finally:
            self._done(origin, conn, reuse and conn.finished())

    def _request(self, origin: Origin, path: str, body: bytes,
                 headers: Mapping[str, str]) -> bytes:
        key = (origin, path, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            head = self._head(origin, path, headers)
            if len(self._heads) >= MAX_HEADS:
                self._heads.clear()
            self._heads[key] = head
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)

    def _enter(self) -> Coroutine[Any, Any, None] | None:
        """Take a connection slot: None if one was free, else what to await for one."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that opened them (a library user may run
            # several loops one after another): start afresh on a new one.
            self.close()
            self._free = self._limit
            self._queue.clear()
            self._loop = loop
        if self._free:
            self._free -= 1
            return None
        return self._slot(loop)

    async def _sent(self, origin: Origin, path: str, body: bytes,
                    headers: Mapping[str, str]
                    ) -> tuple[Connection, tuple[int, list[str], dict[str, str], bool]]:
        """A connection slot taken (:meth:`_done` gives it back), the request sent on an
        idle connection (once more on a new one if the server closed that one while it
        was idle) or a new one, and its answer's head. On failure the slot is given back
        and the connection dropped."""
        request = self._request(origin, path, body, headers)
        wait = self._enter()
        if wait is not None:
            await wait
        try:
            conn = self._reusable(origin)
            if conn is not None:
                try:
                    return conn, await conn.head(request)
                except Stale:
                    self._drop(conn)
                except BaseException:
                    self._drop(conn)
                    raise
            conn = await self._connect(origin)
            try:
                return conn, await conn.head(request)
            except BaseException:
                self._drop(conn)
                raise
        except BaseException:
            self._release()
            raise

    async def _slot(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a call to give its connection slot to this one."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # given a slot, then cancelled: it goes to the next
            raise

    def _release(self) -> None:
        """Give a slot back: to the first call still waiting, or to the free ones."""
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():  # a cancelled one is left out
                waiter.set_result(None)
                return
        self._free += 1

    def _head(self, origin: Origin, path: str, headers: Mapping[str, str]) -> bytes:
        """The request line and headers but Content-Length, each line ended."""
        head = [f"POST {origin.prefix}{path} HTTP/1.1", f"Host: {origin.host_header}"]
        given = {k.lower() for k in headers}
        head += [f"{k}: {v}" for k, v in (("User-Agent", self._user_agent), ("Accept", "*/*"),
                                          ("Accept-Encoding", "identity"))
                 if k.lower() not in given]
        for k, v in headers.items():
            if k.lower() in _OWN_HEADERS:
                continue
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                raise WireError(f"header {k!r} holds a line break")
            head.append(f"{k}: {v}")
        return "".join(line + "\r\n" for line in head).encode("utf-8")

    def _reusable(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._drop(conn)
        return None

    async def _connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        tls: Any = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            _, conn = await loop.create_connection(
                Connection, origin.host, origin.port, ssl=tls,
                server_hostname=origin.host if tls else None)
        except OSError as exc:
            raise WireError(f"cannot connect to {origin.host_header}: "
                            f"{exc.strerror or exc}") from None
        self._open.add(conn)
        return conn

    def _done(self, origin: Origin, conn: Connection, reuse: bool) -> None:
        """Done with an answer: its connection goes back to the idle ones if it may
        (else it is closed), and its slot to the next call."""
        if reuse and not conn.closed:
            self._idle.setdefault(origin, []).append(conn)
        else:
            self._drop(conn)
        self._release()

    def _drop(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def close(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()
