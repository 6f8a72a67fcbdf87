"""The router's own HTTP/1.1 client (harkd.router.wire, its framing harkd.router.http1)
against a scripted raw-TCP upstream (a fault-injection peer that writes exactly the bytes
each test gives it): framing by length, chunks and end of connection, gzip, keep-alive
reuse, a connection the server closed while idle, one cut mid-answer, and a timeout that
must not leave the connection in the pool."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from harkd.router.wire import Origin, WireError, WirePool

pytestmark = pytest.mark.anyio

class Upstream:
    """Accepts connections and answers each request with the next scripted reply; a
    reply of None closes the connection without answering; after an HTTP/1.0 reply
    (framed by the end of the connection) or a :func:`cut` one it closes too."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    break
                writer.write(reply.removesuffix(CUT))
                await writer.drain()
                if reply.startswith(b"HTTP/1.0") or reply.endswith(CUT):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


CUT = b"\0cut"


def cut(reply: bytes) -> bytes:
    """A reply after which the scripted upstream closes the connection."""
    return reply + CUT


@asynccontextmanager
async def upstream(replies: list[bytes | None],
                   tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    up = Upstream(replies)
    server = await asyncio.start_server(up.handle, "127.0.0.1", 0, ssl=tls)
    up.port = server.sockets[0].getsockname()[1]
    async with server:
        yield up


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def post(pool: WirePool, up: Upstream, body: bytes = b'{"q": 1}') -> tuple[int, bytes]:
    origin = Origin.of(f"http://127.0.0.1:{up.port}/v1")
    assert origin is not None
    answer = await pool.post(origin, "/chat/completions", body,
                             {"Content-Type": "application/json", "Authorization": "Bearer k"})
    return answer.status, answer.body


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    async with upstream([ok(b"one"), ok(b"two")]) as up:
        pool = WirePool()
        assert await post(pool, up) == (200, b"one")
        assert await post(pool, up, b"[2]") == (200, b"two")
        pool.close()
    assert up.connections == 1
    first = up.requests[0].decode()
    assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{up.port}\r\n" in first and "Authorization: Bearer k\r\n" in first
    assert first.endswith('\r\n\r\n{"q": 1}') and up.requests[1].endswith(b"\r\n\r\n[2]")


async def test_the_connection_limit_queues_calls_first_come_first_served() -> None:
    async with upstream([ok(b"1"), ok(b"2"), ok(b"3")]) as up:
        pool = WirePool(limit=1)
        first = asyncio.create_task(post(pool, up, b"[1]"))
        gone = asyncio.create_task(post(pool, up, b"[gone]"))
        last = asyncio.create_task(post(pool, up, b"[3]"))
        await asyncio.sleep(0)  # all three have started: one holds the slot, two wait
        gone.cancel()  # a waiter cancelled before its turn must not keep a slot
        assert await first == (200, b"1")
        assert await last == (200, b"2")
        assert gone.cancelled()
        assert await post(pool, up) == (200, b"3")  # the slot came back
        pool.close()
    # one slot: one connection, used by each call in turn
    assert up.connections == 1
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in up.requests] == [
        b"[1]", b"[3]", b'{"q": 1}']


async def test_chunked_gzip_and_end_of_connection_answers() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    zipped = gzip.compress(b"unzipped")
    async with upstream([chunked, ok(zipped, "Content-Encoding: gzip"),
                         b"HTTP/1.0 200 OK\r\n\r\nuntil the end"]) as up:
        pool = WirePool()
        assert await post(pool, up) == (200, b"hello world")
        assert await post(pool, up) == (200, b"unzipped")
        assert await post(pool, up) == (200, b"until the end")
        pool.close()
    assert up.connections == 1  # the last answer ended its connection, which is not reused


async def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    async with upstream([ok(b"first"), None, ok(b"second")]) as up:
        pool = WirePool()
        assert await post(pool, up) == (200, b"first")
        # The upstream closes that connection after reading the next request, without a
        # byte of answer (as a server whose keep-alive ran out): sent again, anew.
        assert await post(pool, up) == (200, b"second")
        pool.close()
    assert up.connections == 2 and len(up.requests) == 3


async def test_an_answer_cut_in_the_middle_fails_and_is_not_sent_again() -> None:
    async with upstream([cut(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")]) as up:
        pool = WirePool()
        with pytest.raises(WireError, match="middle of the answer"):
            await post(pool, up)
        pool.close()
    assert len(up.requests) == 1


async def test_error_statuses_come_back_with_their_headers() -> None:
    async with upstream([ok(b'{"error": "slow down"}', "Retry-After: 3").replace(
            b"200 OK", b"429 Too Many Requests")]) as up:
        pool = WirePool()
        origin = Origin.of(f"http://127.0.0.1:{up.port}/v1")
        assert origin is not None
        answer = await pool.post(origin, "/chat/completions", b"{}", {})
        pool.close()
    assert answer.status == 429 and answer.headers["retry-after"] == "3"


async def test_headers_are_read_whole_and_framing_by_the_first_of_each() -> None:
    # The framing headers are picked out of the head in one pass and the multidict is
    # made only when asked for: both must read the head as a multidict does (names in
    # any case, a repeated header's first value frames; every line kept, in order).
    reply = (b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX-Seen: a\r\nContent-Length: 99\r\n"
             b"CONNECTION:  close \r\nX-Seen: b\r\n\r\nhello")
    async with upstream([reply, ok(b"again"),
                         b"HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nno"]) as up:
        pool = WirePool()
        origin = Origin.of(f"http://127.0.0.1:{up.port}/v1")
        assert origin is not None
        async with asyncio.timeout(5):  # framed by the 99, it would wait for more
            answer = await pool.post(origin, "/chat/completions", b"{}", {})
        assert (answer.status, answer.body) == (200, b"hello")
        assert answer.headers.getall("x-seen") == ["a", "b"]
        assert answer.headers["Connection"] == "close"
        assert await post(pool, up) == (200, b"again")
        with pytest.raises(WireError, match="malformed header line"):
            await post(pool, up)
        pool.close()
    # Connection: close was heeded: the second request went on a new connection, which
    # the third used again.
    assert up.connections == 2


async def test_a_timeout_drops_the_connection_instead_of_pooling_it() -> None:
    async with upstream([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslo", ok(b"fresh")]) as up:
        pool = WirePool()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await post(pool, up)
        assert await post(pool, up) == (200, b"fresh")
        pool.close()
    assert up.connections == 2


async def lines(pool: WirePool, up: Upstream, stop: bytes | None = None
                ) -> tuple[int, list[bytes]]:
    """A streamed POST's status and lines, left at the line ``stop`` if it comes."""
    origin = Origin.of(f"http://127.0.0.1:{up.port}/v1")
    assert origin is not None
    got = []
    async with pool.stream(origin, "/chat/completions", b"{}", {}) as answer:
        async for line in answer:
            got.append(line)
            if line == stop:
                break
    return answer.status, got


def chunked(*chunks: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def test_a_stream_comes_line_by_line_and_its_connection_is_reused() -> None:
    # Lines cut across chunks; the reader leaves at [DONE], before the last chunk is
    # read, which has arrived with it: the connection serves the next call.
    sse = chunked(b"data: one\n\nda", b"ta: two\n", b"\ndata: [DONE]\n\n")
    async with upstream([sse, ok(b"next")]) as up:
        pool = WirePool()
        assert await lines(pool, up, b"data: [DONE]") == (
            200, [b"data: one", b"", b"data: two", b"", b"data: [DONE]"])
        assert await post(pool, up) == (200, b"next")
        pool.close()
    assert up.connections == 1


async def test_a_stream_left_before_its_end_is_not_reused() -> None:
    body = b"data: 1\n\ndata: 2\n\n"
    async with upstream([ok(body), chunked(body, body), ok(b"next")]) as up:
        pool = WirePool()
        # framed by its length and all taken from the connection: reused
        assert await lines(pool, up, b"data: 1") == (200, [b"data: 1"])
        # a chunk still to come: the connection is dropped
        assert await lines(pool, up, b"data: 2") == (200, [b"data: 1", b"", b"data: 2"])
        assert await post(pool, up) == (200, b"next")
        pool.close()
    assert up.connections == 2


async def test_streams_to_the_end_of_the_connection_gzip_and_error_bodies() -> None:
    zipped = gzip.compress(b"data: a\r\n\r\ndata: b\r\n")
    async with upstream([b"HTTP/1.0 200 OK\r\n\r\nfirst\nlast without a line end",
                         ok(zipped, "Content-Encoding: gzip"),
                         ok(b'{"error": "no"}').replace(b"200 OK", b"500 Oops")]) as up:
        pool = WirePool()
        assert await lines(pool, up) == (200, [b"first", b"last without a line end"])
        assert await lines(pool, up) == (200, [b"data: a\r", b"\r", b"data: b\r"])
        origin = Origin.of(f"http://127.0.0.1:{up.port}/v1")
        assert origin is not None
        async with pool.stream(origin, "/chat/completions", b"{}", {}) as answer:
            assert answer.status == 500 and await answer.read() == b'{"error": "no"}'
        pool.close()
    assert up.connections == 2  # the HTTP/1.0 answer ended its connection


async def test_unreachable_and_unsupported() -> None:
    pool = WirePool()
    origin = Origin.of("http://127.0.0.1:1/v1")
    assert origin is not None
    with pytest.raises(WireError, match="cannot connect"):
        await pool.post(origin, "/x", b"", {})
    with pytest.raises(WireError, match="line break"):
        await pool.post(origin, "/x", b"", {"X-Bad": "a\r\nb"})
    assert Origin.of("unix:///tmp/sock") is None and Origin.of("http://u:p@host/v1") is None
    https = Origin.of("https://api.example.com/v1/")
    assert https is not None and (https.tls, https.port, https.prefix) == (True, 443, "/v1")
    assert Origin.of("http://[::1]:8080/v1") == Origin(False, "::1", 8080, "[::1]:8080", "/v1")


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, from scripts/setup)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_verifies_the_server_certificate(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with upstream([ok(b"secure")], server_tls) as up:
        origin = Origin.of(f"https://127.0.0.1:{up.port}/v1")
        assert origin is not None
        untrusted = WirePool()
        with pytest.raises(WireError, match="cannot connect"):
            await untrusted.post(origin, "/chat/completions", b"{}", {})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the system would trust
        trusting = WirePool()
        answer = await trusting.post(origin, "/chat/completions", b"{}", {})
        trusting.close()
    assert (answer.status, answer.body) == (200, b"secure")
