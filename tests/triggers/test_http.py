"""The webhook trigger: bodies, auth, limits, concurrency, response modes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from harkd.auth import sign
from harkd.testing import run_daemon, serve_app, wait_until

pytestmark = pytest.mark.anyio

ECHO = "trigger: {http: {}}\nsteps:\n  - template: '{{ input }}'\n"
JSON_OUT = "trigger: {http: {}}\nsteps:\n  - template: '{{ {\"got\": input} }}'\n"


async def test_bodies_by_content_type(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO, "j": JSON_OUT}) as d:
        async with d.http.post(d.url("/hooks/j"), json={"a": [1, 2]}) as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == {"got": {"a": [1, 2]}}
        async with d.http.post(d.url("/hooks/j"), data={"f": "v"}) as r:
            assert await r.json() == {"got": {"f": "v"}}
        async with d.http.post(d.url("/hooks/echo"), data="plain",
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await r.text() == "plain"


async def test_json_bodies_parse_as_the_standard_library_does(tmp_path: Path) -> None:
    """The orjson fast path gives the value json.loads gives, or steps aside: integers past
    64 bits stay integers, NaN-style constants and 1e400 parse, a declared charset counts."""
    bodies = [
        (b'{"big": 1180591620717411303424, "id": 12345678901234567890, '
         b'"neg": -9223372036854775809}', "utf-8"),
        (b'{"x": Infinity, "y": -Infinity, "z": [1e400]}', "utf-8"),
        (rb'{"a": 1, "a": 2, "s": "caf\u00e9 \ud83d\ude00", "f": 1.0000000000000002}', "utf-8"),
        (b'{"n": "\xc3\xa9"}', "latin-1"),
    ]
    async with run_daemon(tmp_path, {"j": JSON_OUT}) as d:
        for body, charset in bodies:
            headers = {"Content-Type": f"application/json; charset={charset}"}
            async with d.http.post(d.url("/hooks/j"), data=body, headers=headers) as r:
                assert r.status == 200
                got = json.loads(await r.text())["got"]
            want = json.loads(body.decode(charset))
            # the JSON text, not ==, so that an integer turned float fails (2**70 == 2.0**70)
            assert json.dumps(got) == json.dumps(want), body


async def test_bad_requests_never_reach_the_steps(tmp_path: Path) -> None:
    get_only = "trigger: {http: {methods: [GET]}}\nsteps: [{template: '{{ input.q }}'}]\n"
    async with run_daemon(tmp_path, {"echo": ECHO, "g": get_only}, max_body=1000) as d:
        async with d.http.post(d.url("/hooks/echo"), data="{not json",
                               headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert "not valid JSON" in (await r.json())["error"]["message"]
        async with d.http.post(d.url("/hooks/echo"), data="x" * 1001,
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 413
        async with d.http.put(d.url("/hooks/echo"), data="x") as r:
            assert r.status == 405 and r.headers["Allow"] == "POST"
        async with d.http.get(d.url("/hooks/g?q=hello")) as r:
            assert await r.text() == "hello"
        async with d.http.post(d.url("/hooks/echo"), data=b"\xff\xfe",
                               headers={"Content-Type": "text/plain; charset=utf-8"}) as r:
            assert r.status == 400
    runs = [rec for rec in d.daemon.catalog.entries["echo"].errors]
    assert runs == []


async def test_default_body_limit_is_one_mebibyte(tmp_path: Path) -> None:
    ok = "trigger: {http: {}}\nsteps: [{template: ok}]\n"
    async with run_daemon(tmp_path, {"echo": ok}) as d:
        async with d.http.post(d.url("/hooks/echo"), data=b"x" * (1024 * 1024),
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 200
        async with d.http.post(d.url("/hooks/echo"), data=b"x" * (1024 * 1024 + 1),
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 413


HMAC = """
trigger:
  http:
    auth: {hmac: {secret: s3cret-value, header: X-Sig, prefix: "sha256="}}
steps: [{template: "signed {{ input.n }}"}]
"""

HMAC_TS = """
trigger:
  http:
    auth: {hmac: {secret: s3cret-value, header: X-Sig, prefix: "", timestamp_header: X-Ts,
                  tolerance: 60s}}
steps: [{template: "fresh"}]
"""


async def test_hmac_signature(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"h": HMAC}) as d:
        body = json.dumps({"n": 1}).encode()
        headers = {"Content-Type": "application/json"}
        async with d.http.post(d.url("/hooks/h"), data=body,
                               headers={**headers, "X-Sig": sign("s3cret-value", body)}) as r:
            assert (r.status, await r.text()) == (200, "signed 1")
        async with d.http.post(d.url("/hooks/h"), data=body,
                               headers={**headers, "X-Sig": sign("wrong", body)}) as r:
            assert r.status == 401
            assert "does not match" in (await r.json())["error"]["message"]
        async with d.http.post(d.url("/hooks/h"), data=body, headers=headers) as r:
            assert r.status == 401
            assert "missing signature header X-Sig" in (await r.json())["error"]["message"]
        tampered = body.replace(b"1", b"2")
        async with d.http.post(d.url("/hooks/h"), data=tampered,
                               headers={**headers, "X-Sig": sign("s3cret-value", body)}) as r:
            assert r.status == 401


async def test_hmac_with_timestamp_replay_window(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"t": HMAC_TS}) as d:
        body = b"{}"

        def headers(ts: int) -> dict[str, str]:
            signed = f"{ts}.".encode() + body
            return {"X-Ts": str(ts), "X-Sig": sign("s3cret-value", signed, prefix=""),
                    "Content-Type": "application/json"}

        now = int(time.time())
        async with d.http.post(d.url("/hooks/t"), data=body, headers=headers(now)) as r:
            assert r.status == 200
        async with d.http.post(d.url("/hooks/t"), data=body, headers=headers(now - 3600)) as r:
            assert r.status == 401
            assert "replay window" in (await r.json())["error"]["message"]


async def test_bearer_auth(tmp_path: Path) -> None:
    yaml = "trigger: {http: {auth: {bearer: {token: tok-123456}}}}\nsteps: [{template: in}]\n"
    async with run_daemon(tmp_path, {"b": yaml}) as d:
        async with d.http.post(d.url("/hooks/b"),
                               headers={"Authorization": "Bearer tok-123456"}) as r:
            assert r.status == 200
        async with d.http.post(d.url("/hooks/b"), headers={"Authorization": "Bearer no"}) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with d.http.post(d.url("/hooks/b")) as r:
            assert r.status == 401


async def test_failed_run_answers_error_shape(tmp_path: Path) -> None:
    yaml = "trigger: {http: {}}\nsteps: [{template: '{{ input.missing.deeper }}'}]\n"
    async with run_daemon(tmp_path, {"f": yaml}) as d:
        async with d.http.post(d.url("/hooks/f"), json={}) as r:
            body = await r.json()
            assert r.status == 422
            assert body["error"]["run_id"] == r.headers["X-Harkd-Run-Id"]
            assert "missing" in body["error"]["message"]


def _slow(mode: str, extra: str = "") -> str:
    return (f"trigger: {{http: {{}}}}\nconcurrency: {{mode: {mode}{extra}}}\n"
            "steps:\n  - http: {url: '{{ input }}'}\n")


async def test_concurrency_modes(tmp_path: Path) -> None:
    from aiohttp import web

    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    files = {"single": _slow("single"), "queue": _slow("queue", ", max: 1, queue: 1"),
             "par": _slow("parallel", ", max: 2")}
    async with serve_app({"/": hold}) as base, run_daemon(tmp_path, files) as d:
            url = base + "/"

            async def post(name: str) -> tuple[int, str, str | None]:
                async with d.http.post(d.url(f"/hooks/{name}"), data=url,
                                       headers={"Content-Type": "text/plain"}) as r:
                    return r.status, await r.text(), r.headers.get("Retry-After")

            def busy(name: str, n: int) -> bool:
                gate = d.daemon.catalog.entries[name].gate
                return gate is not None and len(gate.active) + gate.waiting >= n

            first = asyncio.create_task(post("single"))
            await wait_until(lambda: busy("single", 1))
            status, _, retry = await post("single")
            assert status == 429 and retry == "1"

            q1 = asyncio.create_task(post("queue"))
            await wait_until(lambda: busy("queue", 1))
            q2 = asyncio.create_task(post("queue"))
            await wait_until(lambda: busy("queue", 2))
            status, _, retry = await post("queue")
            assert status == 503 and retry is not None

            p = [asyncio.create_task(post("par")) for _ in range(2)]
            await wait_until(lambda: busy("par", 2))
            assert (await post("par"))[0] == 429

            release.set()
            assert (await first)[:2] == (200, "done")
            assert [(await t)[0] for t in (q1, q2, *p)] == [200, 200, 200, 200]


async def test_restart_mode_cancels_the_running_run(tmp_path: Path) -> None:
    from aiohttp import web

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        return web.Response(text="late")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    async with serve_app({"/hang": hang, "/fast": fast}) as base, \
            run_daemon(tmp_path, {"r": _slow("restart")}) as d:
            async def post(path: str) -> tuple[int, str]:
                async with d.http.post(d.url("/hooks/r"), data=base + path,
                                       headers={"Content-Type": "text/plain"}) as r:
                    return r.status, await r.text()

            old = asyncio.create_task(post("/hang"))
            await wait_until(lambda: d.daemon.catalog.entries["r"].gate.active)  # type: ignore[union-attr]
            assert await post("/fast") == (200, "fast")
            status, body = await old
            assert status == 409 and "newer run" in body


async def test_async_mode_answers_202(tmp_path: Path) -> None:
    yaml = "trigger: {http: {response: async}}\nsteps: [{log: 'background {{ input }}'}]\n"
    async with run_daemon(tmp_path, {"bg": yaml}) as d:
        async with d.http.post(d.url("/hooks/bg"), data="job",
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 202
            body = await r.json()
            assert body["status"] == "accepted" and r.headers["X-Harkd-Run-Id"] == body["run_id"]


async def test_sse_when_asked(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        async with d.http.post(d.url("/hooks/echo"), data="hi",
                               headers={"Accept": "text/event-stream",
                                        "Content-Type": "text/plain"}) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in (await r.text()).splitlines()
                      if line.startswith("data: ")]
    assert events[-1]["type"] == "result" and events[-1]["output"] == "hi"


async def test_timeout_fails_the_run(tmp_path: Path) -> None:
    yaml = ("trigger: {http: {}}\ntimeout: 100ms\nsteps:\n"
            "  - pipeline: {name: sleepy}\n")
    sleepy = "trigger: {http: {path: /hooks/sleepy}}\nsteps:\n  - http: {url: '{{ input }}'}\n"
    from aiohttp import web

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        return web.Response(text="late")

    async with serve_app({"/": hang}) as base, \
            run_daemon(tmp_path, {"t": yaml, "sleepy": sleepy}) as d:
            async with d.http.post(d.url("/hooks/t"), data=base + "/",
                                   headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 504
                assert "timed out after 0.1s" in (await r.json())["error"]["message"]


async def test_a_body_that_arrives_after_its_headers(tmp_path: Path) -> None:
    """A small body usually comes with its headers and is taken from the buffer at once;
    one that is still on its way is waited for."""
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        host, port = d.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /hooks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 11\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b" world")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello world"
