"""HTTP/1.1 framing for the router's wire client (:mod:`.wire`): one keep-alive
connection (:class:`Connection`, an asyncio protocol) sends a request and reads its
answer's head, then the body whole (:class:`Answer`) or as it arrives (:class:`Streamed`,
line by line for SSE).

Answers are framed by ``Content-Length``, chunked transfer coding or the end of the
connection; a gzip or deflate answer is decoded (the pool asks for ``identity``, and some
servers send it anyway). Whether a connection may be used again is decided here (an answer
read to its end that did not say ``Connection: close``, or a stream left before its end
with all that is left of it already here); keeping it is the pool's business.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD = 64 * 1024
#: the longest line of a streamed answer
MAX_LINE = 16 * 1024 * 1024
#: how a body is framed, when not by its length (:func:`_length`)
CHUNKED = -1
TO_END = -2


class WireError(OSError):
    """The connection failed, or the answer was not readable HTTP/1.1."""


class Stale(WireError):
    """A reused connection ended before any byte of the answer: safe to send again."""


class _Head:
    """An answer's status and header lines, made a multidict when asked for: a proxied
    call needs only the few that frame the body, read by :func:`_framing`."""

    __slots__ = ("_headers", "_lines", "status")

    def __init__(self, status: int, lines: list[str]) -> None:
        self.status = status
        self._lines = lines
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            headers: CIMultiDict[str] = CIMultiDict()
            for line in self._lines:
                name, _, value = line.partition(":")
                headers.add(name.strip(), value.strip())
            self._headers = CIMultiDictProxy(headers)
        return self._headers


class Answer(_Head):
    """One answer, its body read whole."""

    __slots__ = ("body",)

    def __init__(self, status: int, lines: list[str], body: bytes) -> None:
        super().__init__(status, lines)
        self.body = body


class Streamed(_Head):
    """An answer read as it arrives: ``status`` and ``headers`` at once, then its body
    whole (:meth:`read`) or line by line (``async for``: each line without its line end,
    the last one also when no line end follows it)."""

    __slots__ = ("_conn", "_decoder", "_pending", "_ready")

    def __init__(self, conn: Connection, status: int, lines: list[str],
                 framing: dict[str, str]) -> None:
        super().__init__(status, lines)
        self._conn = conn
        self._decoder = _decoder(framing)
        self._pending = b""
        self._ready: collections.deque[bytes] = collections.deque()

    async def read(self) -> bytes:
        """The rest of the body, decoded."""
        rest = self._pending + self._decoded(await self._conn.rest())
        self._pending = b""
        return rest + (self._decoder.flush() if self._decoder is not None else b"")

    def __aiter__(self) -> Streamed:
        return self

    async def __anext__(self) -> bytes:
        # A method, not an async generator: one left before its end (a stream that said
        # [DONE]) would be closed by a task of the event loop's.
        ready = self._ready
        while not ready:
            piece = await self._conn.piece()
            if piece is None:
                rest = self._pending + (self._decoder.flush() if self._decoder else b"")
                self._pending = b""
                self._decoder = None
                if not rest:
                    raise StopAsyncIteration
                piece = rest + b"\n"
            else:
                piece = self._pending + self._decoded(piece)
            *lines, self._pending = piece.split(b"\n")
            if len(self._pending) > MAX_LINE:
                raise WireError("a line of the answer is too long")
            ready.extend(lines)
        return ready.popleft()

    def _decoded(self, piece: bytes) -> bytes:
        if self._decoder is None:
            return piece
        try:
            out: bytes = self._decoder.decompress(piece)
        except zlib.error as exc:
            raise WireError(f"the answer's body does not decode: {exc}") from None
        return out


#: the headers that frame an answer's body or decide the connection's reuse
_FRAMING = frozenset({"connection", "content-encoding", "content-length",
                      "transfer-encoding"})


def _framing(lines: list[str]) -> dict[str, str]:
    """The framing headers of an answer's lines by lower-case name, the first of each (as
    a multidict's ``get``); raises on a line without a colon."""
    found: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise WireError(f"a malformed header line: {line[:80]!r}")
        name = name.strip().lower()
        if name in _FRAMING and name not in found:
            found[name] = value.strip()
    return found


class Connection(asyncio.Protocol):
    """One keep-alive connection: :meth:`head` sends a request and reads its answer's
    head, then the body comes from :meth:`whole`, :meth:`piece` or :meth:`rest` (or
    through a :class:`Streamed`); :meth:`finished` says whether it was read to its end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        #: the exchange waiting for more bytes (a bare future: an Event cost more)
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._error: BaseException | None = None
        #: the body being read: its framing (:func:`_length`), the bytes left of it or
        #: of its current chunk, whether that chunk's CRLF is still to come, its end
        self._length = 0
        self._left = 0
        self._crlf = False
        self._done = True

    # -- protocol callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport; not an asyncio.Transport subclass on uvloop (server.loop)
        self.transport = transport  # type: ignore[assignment]
        # kept: each asyncio.get_running_loop() is a getpid() system call on Python 3.11
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wait(self) -> asyncio.Future[None]:
        """A future done when bytes arrive or the connection ends (the callers look
        again). Awaited as it is: a coroutine around it cost a frame per wait."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    # -- one exchange --------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return not self.closed and not self._eof

    def _more(self, got_any: bool) -> asyncio.Future[None]:
        """What to await for more bytes (the callers look at the buffer again); raises
        if the connection has ended."""
        if self._eof:
            if not got_any:
                raise Stale("the connection was closed before the answer began")
            raise WireError("the connection was closed in the middle of the answer"
                            + (f": {self._error}" if self._error else ""))
        return self._wait()

    def _short(self, got_any: bool) -> asyncio.Future[None]:
        """What to await when a head or a line is not all here yet (the callers look
        again); raises if it is already too long or the connection has ended."""
        if len(self._buffer) > MAX_HEAD:
            raise WireError("the answer's head is too long")
        return self._more(got_any or bool(self._buffer))

    async def _until(self, marker: bytes, start: int, got_any: bool) -> int:
        while (i := self._buffer.find(marker, start)) < 0:
            start = max(0, len(self._buffer) - len(marker) + 1)
            await self._short(got_any)
        return i

    async def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            await self._more(True)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def head(self, request: bytes) -> tuple[int, list[str], dict[str, str], bool]:
        """Send ``request`` and read its answer's head (past interim 1xx answers): the
        status, the header lines, the framing headers by lower-case name, and whether
        the connection may be used again once the body has been read. The body then
        comes from :meth:`piece` (or :meth:`whole`)."""
        assert self.transport is not None
        buffer = self._buffer
        buffer.clear()
        self.transport.write(request)
        while True:
            # Waited for here, not in _until: a coroutine less a call (the answer is
            # never here yet when the request has just been written).
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                await self._short(False)
            head = buffer[:end].decode("latin-1")
            del buffer[:end + 4]
            status_line, _, rest = head.partition("\r\n")
            version, _, tail = status_line.partition(" ")
            try:
                status = int(tail[:3])
            except ValueError:
                raise WireError(f"not an HTTP answer: {status_line[:80]!r}") from None
            if not version.startswith("HTTP/1."):
                raise WireError(f"not an HTTP/1 answer: {status_line[:80]!r}")
            lines = rest.split("\r\n") if rest else []
            framing = _framing(lines)
            if 100 <= status < 200:
                continue  # an interim answer; the real one follows
            break
        connection = framing.get("connection", "").lower()
        reuse = (version == "HTTP/1.1" and "close" not in connection) or \
            (version == "HTTP/1.0" and "keep-alive" in connection)
        length = self._length = _length(status, framing)
        if length == TO_END:
            reuse = False
        self._left = max(0, length)
        self._crlf = False
        self._done = length == 0
        return status, lines, framing, reuse

    def whole(self) -> bytes | None:
        """The whole body if it has all arrived and is framed by its length (the usual
        case, read without a coroutine); else None, and :meth:`piece` reads it."""
        left = self._left
        if self._length >= 0 and len(self._buffer) >= left:
            body = bytes(self._buffer[:left])
            del self._buffer[:left]
            self._left = 0
            self._done = True
            return body
        return None

    async def piece(self) -> bytes | None:
        """The body's next bytes as they arrive (not decoded); None once it has ended."""
        if self._done:
            return None
        buffer = self._buffer
        if self._length == TO_END:
            while not buffer:
                if self._eof:
                    self._done = True
                    return None
                await self._wait()
            piece = bytes(buffer)
            buffer.clear()
            return piece
        if self._left == 0:  # chunked, between two chunks
            if self._crlf and await self._take(2) != b"\r\n":
                raise WireError("a chunk did not end with CRLF")
            end = await self._until(b"\r\n", 0, True)
            size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
            del buffer[:end + 2]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise WireError(f"a malformed chunk size: {size_text[:20]!r}") from None
            if size == 0:
                # Trailers (usually none) end with an empty line.
                while (end := await self._until(b"\r\n", 0, True)) != 0:
                    del buffer[:end + 2]
                del buffer[:2]
                self._done = True
                return None
            self._left = size
            self._crlf = True
        while not buffer:
            await self._more(True)
        piece = bytes(buffer[:self._left])
        del buffer[:len(piece)]
        self._left -= len(piece)
        if self._left == 0 and self._length >= 0:
            self._done = True
        return piece

    async def rest(self) -> bytes:
        """The rest of the body (not decoded), as it arrives."""
        parts = []
        while (piece := await self.piece()) is not None:
            parts.append(piece)
        return b"".join(parts)

    def finished(self) -> bool:
        """Whether the body has been read to its end, or all that is left of it is here
        (the end of a chunk and a last chunk without extensions or trailers: taken)."""
        if not self._done and self._length == CHUNKED and self._left == 0 and \
                bytes(self._buffer) == (b"\r\n0\r\n\r\n" if self._crlf else b"0\r\n\r\n"):
            self._buffer.clear()
            self._done = True
        return self._done


def _length(status: int, framing: dict[str, str]) -> int:
    """The length of an answer's body, or :data:`CHUNKED`, or :data:`TO_END` (framed by
    the end of the connection)."""
    if status in (204, 304):
        return 0
    if "chunked" in framing.get("transfer-encoding", "").lower():
        return CHUNKED
    length = framing.get("content-length")
    if length is None:
        return TO_END
    try:
        n = int(length)
    except ValueError:
        raise WireError(f"a malformed Content-Length: {length[:40]!r}") from None
    if n < 0:
        raise WireError(f"a malformed Content-Length: {length[:40]!r}")
    return n


def _coding(framing: dict[str, str]) -> str:
    coding = framing.get("content-encoding", "identity").lower().strip()
    if coding in ("", "identity", "gzip", "x-gzip", "deflate"):
        return coding
    raise WireError(f"the answer is encoded as {coding!r}, which harkd does not read")


def _decoder(framing: dict[str, str]) -> Any:
    """A zlib decompressor for a gzip or deflate body, None for an identity one."""
    coding = _coding(framing)
    if coding in ("", "identity"):
        return None
    if coding == "deflate":  # a zlib stream (a raw one is not told apart here)
        return zlib.decompressobj()
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def decoded(framing: dict[str, str], body: bytes) -> bytes:
    """A whole body as its ``Content-Encoding`` (in ``framing``, from :meth:`Connection.head`)
    says: gzip or deflate decoded, identity as it is."""
    if not body:
        return body
    coding = _coding(framing)
    if coding in ("", "identity"):
        return body
    try:
        if coding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)  # gzip, x-gzip
    except zlib.error as exc:
        raise WireError(f"the answer's {coding} body does not decode: {exc}") from None

