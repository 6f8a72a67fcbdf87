"""harkd's own MCP server (POST /mcp) with the official SDK's client, against a real daemon."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from harkd.testing import DaemonHandle, run_daemon
from harkd.tools.mcp_client import MCPClients, ServerConfig

pytestmark = pytest.mark.anyio

TOKEN = "mcp-test-token-6d1f0a"
FILES = {
    "shout": """
description: Shout text back.
mcp:
  tool: shout
  description: Upper-case a text and add an exclamation mark.
  input_schema: {type: object, required: [text], properties: {text: {type: string}}}
trigger: {http: {}}
steps:
  - template: "{{ input.text | upper }}!"
""",
    "echo-plain": """
mcp: {}
trigger: {http: {}}
steps:
  - template: "{{ {'got': input, 'n': 3} }}"
""",
    "broken": """
mcp: {description: Always fails.}
trigger: {http: {}}
steps:
  - http: {url: "http://127.0.0.1:9/", timeout: 2s}
""",
    "private": """
trigger: {http: {}}
steps:
  - template: secret
""",
}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonHandle]:
    async with run_daemon(tmp_path, FILES, token=TOKEN) as d:
        yield d


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as (read, write, _), \
            ClientSession(read, write) as s:
        await s.initialize()
        yield s


@pytest.fixture
async def session(daemon: DaemonHandle) -> AsyncIterator[ClientSession]:
    async with connect(daemon.url("/mcp"), TOKEN) as s:
        yield s


def text(result: Any) -> str:
    return "".join(c.text for c in result.content)


async def test_lists_only_pipelines_that_opt_in(session: ClientSession) -> None:
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"shout", "echo_plain", "broken"}
    assert tools["shout"].description == "Upper-case a text and add an exclamation mark."
    assert tools["shout"].inputSchema["required"] == ["text"]
    assert tools["echo_plain"].inputSchema["required"] == ["input"]


async def test_calls_run_the_pipeline(session: ClientSession, daemon: DaemonHandle) -> None:
    result = await session.call_tool("shout", {"text": "hey"})
    assert (result.isError, text(result)) == (False, "HEY!")
    result = await session.call_tool("echo_plain", {"input": "a string"})
    assert json.loads(text(result)) == {"got": "a string", "n": 3}
    async with daemon.http.get(daemon.url("/api/runs?pipeline=shout"),
                               headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        runs = (await resp.json())["runs"]
    assert runs[0]["trigger"] == "mcp" and runs[0]["status"] == "ok"


async def test_errors_are_tool_errors(session: ClientSession) -> None:
    result = await session.call_tool("broken", {"input": "x"})
    assert result.isError and "pipeline broken failed" in text(result)
    result = await session.call_tool("shout", {"txt": "typo"})
    assert result.isError and "'text' is a required property" in text(result)
    result = await session.call_tool("nope", {})
    assert result.isError and "no tool 'nope'" in text(result)


async def test_needs_the_token(daemon: DaemonHandle) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with daemon.http.post(daemon.url("/mcp"), json=body) as resp:
        assert resp.status == 401
    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 its own way
        async with connect(daemon.url("/mcp"), "wrong"):
            pass


async def test_without_a_token_only_loopback_hosts_pass(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"shout": FILES["shout"]}) as d:
        async with connect(d.url("/mcp")) as s:
            assert text(await s.call_tool("shout", {"text": "ok"})) == "OK!"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        async with d.http.post(d.url("/mcp"), json=init,
                               headers={**headers, "Host": "evil.example:80"}) as resp:
            assert resp.status == 421, "a DNS-rebinding Host is refused"
        async with d.http.post(d.url("/mcp"), json=init,
                               headers={**headers, "Origin": "http://evil.example"}) as resp:
            assert resp.status == 403


async def test_harkd_uses_its_own_mcp_server_over_http(daemon: DaemonHandle) -> None:
    """The MCP client's streamable-HTTP transport, against harkd's /mcp."""
    group = MCPClients({"self": ServerConfig("self", url=daemon.url("/mcp"),
                                             headers={"Authorization": f"Bearer {TOKEN}"})})
    try:
        tools = await group.tools("mcp:self")
        assert set(tools) == {"shout", "echo_plain", "broken"}
        assert await tools["shout"].call({"text": "loop"}, None) == "LOOP!"
    finally:
        await group.aclose()


def test_a_daemon_nobody_asks_never_imports_mcp(tmp_path: Path) -> None:
    """Opted-in pipelines, webhooks and /v1/models work without importing mcp or litellm."""
    code = f"""
import asyncio, pathlib, sys
from harkd.testing import run_daemon
PLAIN = "trigger: {{http: {{}}}}\\nsteps:\\n  - template: hi\\n"
FILES = {{"a": PLAIN, "b": "mcp: {{}}\\ngateway: true\\n" + PLAIN}}
async def main():
    async with run_daemon(pathlib.Path({str(tmp_path)!r}), FILES) as d:
        async with d.http.post(d.url("/hooks/a"), json={{}}) as r:
            assert r.status == 200
        async with d.http.get(d.url("/v1/models")) as r:
            assert "pipeline/b" in await r.text()
    print(sorted(m for m in ("mcp", "litellm") if m in sys.modules))
asyncio.run(main())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


async def test_input_schema_is_checked_at_load(tmp_path: Path) -> None:
    bad = {"a": "mcp: {input_schema: {type: string}}\n" + FILES["private"],
           "b": "mcp: {input_schema: {type: object, properties: {x: {type: 12}}}}\n"
                + FILES["private"]}
    async with run_daemon(tmp_path, bad) as d:
        errors = {name: d.daemon.catalog.entries[name].errors[0] for name in bad}
        assert "give type: object" in errors["a"].message
        assert "not a valid JSON Schema" in errors["b"].message
        assert errors["b"].position.pointer == "/mcp/input_schema"


async def test_the_shipped_example_through_every_door(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "pipelines" / "word-count.yaml"
    async with run_daemon(tmp_path, {"word-count": example.read_text()}) as d:
        async with connect(d.url("/mcp")) as s:
            result = await s.call_tool("word_count", {"input": "MCP tools are handy"})
            assert text(result) == "4 words"
        body = {"model": "pipeline/word-count",
                "messages": [{"role": "user", "content": "and models too"}]}
        async with d.http.post(d.url("/v1/chat/completions"), json=body) as resp:
            answer = await resp.json()
        assert answer["choices"][0]["message"]["content"] == "3 words"
        async with d.http.post(d.url("/hooks/word-count"), data="a b") as resp:
            assert await resp.text() == "2 words"
