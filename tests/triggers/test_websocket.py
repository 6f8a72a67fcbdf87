"""The WebSocket trigger in text mode: replies, sessions, limits, bad input, slow and
vanishing clients, hot reload. Real daemon, real aiohttp WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harkd.testing import DaemonHandle, capture_logs, run_daemon, wait_until
from streamstep import chunks_step  # noqa: F401 - fixture

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("chunks_step")]

STREAM = """
trigger: {websocket: {}}
steps:
  - chunks: "you said {{ input.text if input is mapping else input }}"
"""
ECHO = "trigger: {websocket: {}}\nsteps:\n  - template: '{{ input }}'\n"
CONN = ("trigger: {websocket: {}}\nsteps:\n"
        "  - template: '{{ {\"c\": trigger.connection, \"s\": trigger.session, "
        "\"n\": trigger.message} }}'\n")


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], dict[str, Any]]:
    """Deltas until the message that ends a run."""
    deltas = []
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        if data["type"] == "delta":
            deltas.append(data["text"])
        else:
            return deltas, data


async def _record(d: DaemonHandle, run_id: str) -> dict[str, Any]:
    async with d.http.get(d.url(f"/api/runs/{run_id}")) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def test_message_streams_deltas_then_result(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"chat": STREAM}) as d, d.http.ws_connect(
            d.ws_url("/ws/chat")) as ws:
        await ws.send_str(json.dumps({"text": "hello there"}))
        deltas, end = await _reply(ws)
        assert deltas == ["you ", "said ", "hello ", "there"]
        assert end["type"] == "result" and end["output"] == "you said hello there"
        await ws.send_str("plain words")
        deltas, end = await _reply(ws)
        assert "".join(deltas) == end["output"] == "you said plain words"
        record = await _record(d, end["run_id"])
        assert record["status"] == "ok" and record["trigger"] == "websocket"
        assert record["input"] == "plain words"
        assert record["steps"][0]["kind"] == "chunks"


async def test_connection_keeps_a_session(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"conn": CONN}) as d:
        async with d.http.ws_connect(d.ws_url("/ws/conn")) as ws:
            seen = []
            for _ in range(3):
                await ws.send_str("x")
                seen.append((await _reply(ws))[1]["output"])
        assert len({s["c"] for s in seen}) == 1 and seen[0]["s"] == seen[0]["c"]
        assert [s["n"] for s in seen] == [1, 2, 3]
        async with d.http.ws_connect(d.ws_url("/ws/conn?session=kitchen")) as ws:
            await ws.send_str("x")
            other = (await _reply(ws))[1]["output"]
        assert other["c"] != seen[0]["c"] and other["s"] == "kitchen"


async def test_messages_of_one_connection_run_in_order(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d, d.http.ws_connect(
            d.ws_url("/ws/echo")) as ws:
        for i in range(5):
            await ws.send_str(f"m{i}")
        outputs = [(await _reply(ws))[1]["output"] for _ in range(5)]
        assert outputs == ["m0", "m1", "m2", "m3", "m4"]


async def test_bad_json_and_binary_frames_get_errors_and_the_connection_stays(
        tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d, d.http.ws_connect(
            d.ws_url("/ws/echo")) as ws:
        await ws.send_str('{"broken": ')
        _, end = await _reply(ws)
        assert end["type"] == "error" and "not valid JSON" in end["message"]
        await ws.send_bytes(b"\x00\x01")
        _, end = await _reply(ws)
        assert end["type"] == "error" and "binary" in end["message"]
        await ws.send_str("still here")
        _, end = await _reply(ws)
        assert end == {"type": "result", "output": "still here", "run_id": end["run_id"]}
        async with d.http.get(d.url("/api/runs?pipeline=echo")) as r:
            assert len((await r.json())["runs"]) == 1  # the bad messages started no run


async def test_oversize_message_closes_with_1009_and_daemon_serves_on(tmp_path: Path) -> None:
    small = "trigger: {websocket: {max_message: 1000}}\nsteps:\n  - template: ok\n"
    async with run_daemon(tmp_path, {"small": small}) as d:
        async with d.http.ws_connect(d.ws_url("/ws/small")) as ws:
            await ws.send_str("x" * 5000)
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1009
        async with d.http.ws_connect(d.ws_url("/ws/small")) as ws:
            await ws.send_str("x" * 900)
            assert (await _reply(ws))[1]["output"] == "ok"


async def test_bearer_token_in_header_or_query(tmp_path: Path) -> None:
    auth = ("trigger: {websocket: {auth: {bearer: {token: s3cret-token}}}}\n"
            "steps:\n  - template: ok\n")
    async with run_daemon(tmp_path, {"priv": auth}) as d:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await d.http.ws_connect(d.ws_url("/ws/priv"))
        assert err.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await d.http.ws_connect(d.ws_url("/ws/priv?token=wrong"))
        async with d.http.ws_connect(d.ws_url("/ws/priv?token=s3cret-token")) as ws:
            await ws.send_str("x")
            assert (await _reply(ws))[1]["output"] == "ok"
        async with d.http.ws_connect(d.ws_url("/ws/priv"), headers={
                "Authorization": "Bearer s3cret-token"}) as ws:
            await ws.send_str("x")
            assert (await _reply(ws))[1]["output"] == "ok"


async def test_plain_http_request_gets_426(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d, d.http.get(d.url("/ws/echo")) as r:
        assert r.status == 426


async def test_connection_limit_per_pipeline(tmp_path: Path) -> None:
    two = "trigger: {websocket: {max_connections: 2}}\nsteps:\n  - template: ok\n"
    async with run_daemon(tmp_path, {"two": two, "echo": ECHO}) as d:
        a = await d.http.ws_connect(d.ws_url("/ws/two"))
        b = await d.http.ws_connect(d.ws_url("/ws/two"))
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await d.http.ws_connect(d.ws_url("/ws/two"))
        assert err.value.status == 503
        async with d.http.ws_connect(d.ws_url("/ws/echo")):  # other pipelines unaffected
            pass
        await a.close()
        await wait_until(lambda: _open(d, "two") == 1)
        c = await d.http.ws_connect(d.ws_url("/ws/two"))
        await c.send_str("x")
        assert (await _reply(c))[1]["output"] == "ok"
        await b.close()
        await c.close()


def _open(d: DaemonHandle, name: str) -> int:
    from harkd.triggers.websocket import Connections

    return Connections.of(d.daemon.services).counts.get(name, 0)


async def test_dropped_connection_cancels_its_run(tmp_path: Path) -> None:
    slow = "trigger: {websocket: {}}\nsteps:\n  - chunks: {text: 'a b c d e f', delay: 0.5}\n"
    async with run_daemon(tmp_path, {"slow": slow}) as d:
        ws = await d.http.ws_connect(d.ws_url("/ws/slow"))
        await ws.send_str("go")
        first = json.loads((await ws.receive(timeout=5)).data)
        assert first == {"type": "delta", "text": "a "}
        bound = d.daemon.catalog.bound("slow")
        assert bound is not None and len(bound.inflight) == 1
        await ws.close()
        await wait_until(lambda: not bound.inflight)
        async with d.http.get(d.url("/api/runs?pipeline=slow")) as r:
            runs = (await r.json())["runs"]
        assert [r["status"] for r in runs] == ["cancelled"]


async def test_client_that_never_reads_is_closed_and_its_run_recorded(tmp_path: Path) -> None:
    flood = ("trigger: {websocket: {send_buffer: 65536}}\nsteps:\n"
             "  - chunks: {text: '" + "x" * 4000 + " y', repeat: 20000}\n")
    async with run_daemon(tmp_path, {"flood": flood, "echo": ECHO}) as d:
        with capture_logs() as logs:
            # aiohttp's client stops reading the socket once 64 KiB wait unread, so a
            # client that never calls receive() really does stop reading.
            ws = await d.http.ws_connect(d.ws_url("/ws/flood"))
            await ws.send_str("go")
            await wait_until(lambda: any(e["event"] == "ws_client_not_reading" for e in logs),
                             timeout=30)
            await wait_until(lambda: _open(d, "flood") == 0, timeout=10)
        async with d.http.get(d.url("/api/runs?pipeline=flood")) as r:
            runs = (await r.json())["runs"]
        assert [r["status"] for r in runs] == ["cancelled"]
        async with d.http.ws_connect(d.ws_url("/ws/echo")) as other:
            await other.send_str("alive")
            assert (await _reply(other))[1]["output"] == "alive"
        ws._response.close()


async def test_many_clients_that_connect_and_vanish(tmp_path: Path) -> None:
    slow = ("trigger: {websocket: {}}\nconcurrency: {max: 128}\n"
            "steps:\n  - chunks: {text: 'a b c', delay: 0.2}\n")
    async with run_daemon(tmp_path, {"slow": slow, "echo": ECHO}) as d:
        sem = asyncio.Semaphore(100)

        async def vanish(i: int) -> None:
            async with sem:
                ws = await d.http.ws_connect(d.ws_url("/ws/slow"))
                if i % 2:
                    await ws.send_str("go")  # half of them leave in the middle of a run
                    await ws.receive(timeout=5)
                # leave without a close handshake: drop the TCP connection
                assert ws._response.connection is not None
                ws._response.connection.transport.abort()  # type: ignore[union-attr]

        await asyncio.gather(*(vanish(i) for i in range(1000)))
        await wait_until(lambda: _open(d, "slow") == 0, timeout=30)
        bound = d.daemon.catalog.bound("slow")
        assert bound is not None
        await wait_until(lambda: not bound.inflight, timeout=30)
        runs, cursor = [], ""
        while cursor is not None:
            async with d.http.get(d.url(f"/api/runs?pipeline=slow&limit=300&cursor={cursor}")
                                  ) as r:
                page = await r.json()
            runs += page["runs"]
            cursor = page["next_cursor"]
        assert len(runs) == 500 and {r["status"] for r in runs} == {"cancelled"}
        async with d.http.ws_connect(d.ws_url("/ws/echo")) as ws:
            await ws.send_str("alive")
            assert (await _reply(ws))[1]["output"] == "alive"


async def test_reload_moves_a_connection_to_the_new_version_at_the_next_message(
        tmp_path: Path) -> None:
    v1 = "trigger: {websocket: {}}\nsteps:\n  - template: 'v1 {{ input }}'\n"
    async with run_daemon(tmp_path, {"chat": v1}) as d, d.http.ws_connect(
            d.ws_url("/ws/chat")) as ws:
        await ws.send_str("a")
        _, end = await _reply(ws)
        assert end["output"] == "v1 a"
        await d.write("chat", v1.replace("v1", "v2"))
        await ws.send_str("b")
        _, end = await _reply(ws)
        assert end["output"] == "v2 b"
        assert (await _record(d, end["run_id"]))["version"] == 2
        await d.write("chat", "trigger: {websocket: {}}\nsteps: [{nope: 1}]\n")
        assert d.state("chat") == "stale"
        await ws.send_str("c")  # an invalid edit: the last good version keeps serving
        assert (await _reply(ws))[1]["output"] == "v2 c"
        await d.remove("chat")
        await ws.send_str("d")
        _, end = await _reply(ws)
        assert end["type"] == "error" and "removed" in end["message"]
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1012


async def test_run_in_flight_at_reload_finishes_on_its_version(tmp_path: Path) -> None:
    v1 = ("trigger: {websocket: {}}\nsteps:\n"
          "  - chunks: {text: 'one two three', delay: 0.3}\n")
    async with run_daemon(tmp_path, {"chat": v1}) as d, d.http.ws_connect(
            d.ws_url("/ws/chat")) as ws:
        await ws.send_str("go")
        assert json.loads((await ws.receive(timeout=5)).data)["text"] == "one "
        await d.write("chat", v1.replace("one two three", "four"))
        _deltas, end = await _reply(ws)
        assert end["output"] == "one two three"
        assert (await _record(d, end["run_id"]))["version"] == 1
        await ws.send_str("again")
        assert (await _reply(ws))[1]["output"] == "four"


async def test_shutdown_closes_open_connections(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        ws = await d.http.ws_connect(d.ws_url("/ws/echo"))
        d.daemon.stop()
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001


async def test_schema_and_build_errors(tmp_path: Path) -> None:
    bad_mode = "trigger: {websocket: {mode: video}}\nsteps: [{template: x}]\n"
    stray_audio = "trigger: {websocket: {audio: {rate: 8000}}}\nsteps: [{template: x}]\n"
    async with run_daemon(tmp_path, {"a": bad_mode, "b": stray_audio}) as d:
        assert d.state("a") == d.state("b") == "rejected"
        err = d.daemon.catalog.entries["b"].errors[0]
        assert err.pointer == "/trigger/websocket/audio" and "mode: audio" in err.message
        assert err.line == 1
