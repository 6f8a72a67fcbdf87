"""The websocket step against a real harkd WebSocket trigger and scripted WebSocket peers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from harkd.testing import run_daemon
from streamstep import chunks_step  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def peer(handler: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """A scripted WebSocket peer on a free loopback port; yields its ws:// URL."""
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def post(d: Any, name: str, body: object) -> tuple[int, Any]:
    async with d.http.post(d.url(f"/hooks/{name}"), json=body) as r:
        return r.status, (await r.json() if r.content_type == "application/json"
                          else await r.text())


@pytest.mark.usefixtures("chunks_step")
async def test_calls_another_pipelines_websocket_until_its_result(tmp_path: Path) -> None:
    talker = """
trigger: {websocket: {}}
steps:
  - chunks: {text: "hello {{ input.name }} from the socket"}
"""
    async with run_daemon(tmp_path, {"talker": talker}) as d:
        url = d.url("/ws/talker").replace("http://", "ws://")
        caller = f"""
trigger: {{http: {{}}}}
steps:
  - websocket:
      url: "{url}"
      send: {{name: "{{{{ input.who }}}}"}}
      until: "message.type in ['result', 'error']"
      collect: true
    as: messages
  - template: >-
      {{{{ {{'result': input[-1].output,
          'deltas': input[:-1] | map(attribute='type') | list}} }}}}
"""
        (tmp_path / "pipelines" / "caller.yaml").write_text(caller)
        for _ in range(100):
            status, body = await post(d, "caller", {"who": "Ada"})
            if status != 404:
                break
            await asyncio.sleep(0.05)
    assert status == 200, body
    assert body["result"] == "hello Ada from the socket"
    assert body["deltas"] == ["delta"] * 5


async def test_first_message_plain_text_and_headers(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["auth"] = ws.request.headers.get("Authorization") if ws.request else None
        seen["got"] = await ws.recv()
        await ws.send("plain text, not JSON")
        await ws.send(json.dumps({"second": True}))

    async with peer(handler) as url:
        flow = f"""
trigger: {{http: {{}}}}
steps:
  - websocket:
      url: "{url}/x"
      headers: {{Authorization: "Bearer abc"}}
"""
        async with run_daemon(tmp_path, {"w": flow}) as d:
            status, body = await post(d, "w", {"q": 1})
    assert (status, body) == (200, "plain text, not JSON")
    assert seen == {"auth": "Bearer abc", "got": '{"q": 1}'}


async def test_failures_are_clear_run_errors(tmp_path: Path) -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.wait_closed()  # never answers; ends when harkd hangs up

    async def closes(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(code=1011, reason="broken")

    async with peer(silent) as quiet, peer(closes) as closing:
        files = {
            "slow": f"trigger: {{http: {{}}}}\nsteps:\n  - websocket: {{url: '{quiet}', "
                    f"timeout: 200ms}}\n",
            "closed": f"trigger: {{http: {{}}}}\nsteps:\n  - websocket: {{url: '{closing}'}}\n",
            "nobody": "trigger: {http: {}}\nsteps:\n  - websocket: {url: 'ws://127.0.0.1:9/'}\n",
            "scheme": "trigger: {http: {}}\nsteps:\n  - websocket: '{{ input.u }}'\n",
        }
        async with run_daemon(tmp_path, files) as d:
            results = {name: await post(d, name, {"u": "http://x"}) for name in files}
            assert (await post(d, "scheme", {"u": "ftp://x"}))[0] == 422
    assert results["slow"][0] == 504
    assert "no answer within 0.2s" in results["slow"][1]["error"]["message"]
    assert results["closed"][0] == 502
    assert "closed the connection (1011)" in results["closed"][1]["error"]["message"]
    assert results["nobody"][0] == 502
    assert "cannot connect" in results["nobody"][1]["error"]["message"]
    assert "must start with ws:// or wss://" in results["scheme"][1]["error"]["message"]
