"""Tools from MCP servers: a real one from PyPI (mcp-server-time) over stdio, a scripted
one built with the SDK, and servers that misbehave (silent, garbage, huge, exiting)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import DaemonHandle, run_daemon, wait_until
from harkd.testing_upstream import Reply, ScriptedUpstream
from harkd.tools import ToolError
from harkd.tools.mcp_client import MCPClients, ServerConfig

pytestmark = pytest.mark.anyio

SCRIPTED = str(Path(__file__).with_name("scripted_mcp.py"))
TIME = (sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def upstream_server() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def upstream(upstream_server: ScriptedUpstream) -> ScriptedUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture(scope="module")
async def scripted() -> AsyncIterator[MCPClients]:
    """One scripted server for the module, as a daemon would share it."""
    ok = (sys.executable, SCRIPTED, "ok")
    group = MCPClients({"s": ServerConfig("s", command=ok, timeout=20.0),
                        "quick": ServerConfig("quick", command=ok, timeout=1.0)})
    yield group
    await group.aclose()


def config(up: ScriptedUpstream, servers: str) -> str:
    return f"""
models:
  fast: [{{model: openai/m1, api_base: "{up.v1}"}}]
router: {{backoff: 1ms, retries: 0}}
mcp:
  servers:
{servers}
"""


def pipe(tools: str) -> str:
    return f"trigger: {{http: {{}}}}\nsteps:\n  - llm: {{model: fast, tools: {tools}}}\n"


async def post(d: DaemonHandle, name: str, body: Any) -> tuple[int, str]:
    async with d.http.post(d.url(f"/hooks/{name}"), json=body) as resp:
        return resp.status, await resp.text()


def tool_messages(up: ScriptedUpstream) -> list[str]:
    return [m["content"] for m in up.last("m1").body["messages"] if m["role"] == "tool"]


async def run_detail(d: DaemonHandle, name: str) -> dict[str, Any]:
    async with d.http.get(d.url(f"/api/runs?pipeline={name}")) as resp:
        runs = (await resp.json())["runs"]
    async with d.http.get(d.url(f"/api/runs/{runs[0]['id']}")) as resp:
        run = await resp.json()
    detail: dict[str, Any] = run["steps"][0]["detail"]
    return detail


async def test_real_time_server_through_an_llm_step(tmp_path: Path,
                                                    upstream: ScriptedUpstream) -> None:
    servers = f"    time: {{command: {json.dumps(list(TIME))}}}"
    files = {"clock": pipe("[mcp:time]"), "convert": pipe("[mcp:time/convert_time, time]")}
    async with run_daemon(tmp_path, files, config=config(upstream, servers)) as d:
        upstream.plan("m1", Reply(tool_calls=(("get_current_time",
                                               {"timezone": "Europe/Paris"}),)))
        status, text = await post(d, "clock", "what time is it in Paris?")
        assert status == 200 and text.startswith("tool said: ")
        assert json.loads(text.removeprefix("tool said: "))["timezone"] == "Europe/Paris"
        offered = {t["function"]["name"] for t in upstream.requests[0].body["tools"]}
        assert offered == {"get_current_time", "convert_time"}
        detail = await run_detail(d, "clock")
        assert [(c["tool"], c["ok"]) for c in detail["tool_calls"]] == [
            ("get_current_time", True)]
        assert '"Europe/Paris"' in detail["tool_calls"][0]["result"], "results are logged"
        assert json.loads(detail["tool_calls"][0]["arguments"]) == {"timezone": "Europe/Paris"}

        # One tool of the server, next to a built-in; bad arguments reach the model.
        upstream.plan("m1", Reply(tool_calls=(("convert_time", {"time": "14:00"}),)))
        status, text = await post(d, "convert", "convert")
        assert status == 200
        offered = {t["function"]["name"] for t in upstream.last("m1").body["tools"]}
        assert offered == {"convert_time", "time"}
        assert "bad arguments for mcp:time/convert_time" in tool_messages(upstream)[0]
        assert (await run_detail(d, "convert"))["tool_calls"][0]["ok"] is False

        from harkd.tools.mcp_client import clients

        server = clients(d.daemon.services).server("time")
        assert server.starts == 1, "one server, shared by both pipelines"


async def test_unknown_server_is_a_pipeline_error(tmp_path: Path,
                                                  upstream: ScriptedUpstream) -> None:
    servers = f"    time: {{command: {json.dumps(list(TIME))}}}"
    async with run_daemon(tmp_path, {"p": pipe("[mcp:tiem]")},
                          config=config(upstream, servers)) as d:
        entry = d.daemon.catalog.entries["p"]
        assert entry.state == "rejected"
        assert "unknown MCP server 'tiem'" in entry.errors[0].message


async def test_a_server_that_exits_at_start_is_a_tool_error(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    servers = '    gone: {command: [/bin/sh, -c, "echo boom >&2; exit 3"]}'
    async with run_daemon(tmp_path, {"p": pipe("[mcp:gone/lookup, time]")},
                          config=config(upstream, servers)) as d:
        upstream.plan("m1", Reply(tool_calls=(("lookup", {"q": "x"}),)))
        status, text = await post(d, "p", "look it up")
        assert status == 200 and text.startswith("tool said: ")
        message = tool_messages(upstream)[0]
        assert "MCP server gone exited at start" in message and "boom" in message
        assert "exited at start" in (await run_detail(d, "p"))["mcp_errors"][0]


async def test_tools_and_arguments(scripted: MCPClients) -> None:
    tools = await scripted.tools("mcp:s")
    assert set(tools) == {"echo", "huge", "sleep", "die", "hangup"}
    assert await tools["echo"].call({"text": "hi", "times": 2}, None) == "hi hi"
    with pytest.raises(ToolError, match=r"bad arguments .*'text' is a required property"):
        await tools["echo"].call({}, None)
    with pytest.raises(ToolError, match=r"bad arguments .*not of type 'integer' at /times"):
        await tools["echo"].call({"text": "a", "times": "two"}, None)
    with pytest.raises(ToolError, match="has no tool 'nope'"):
        await scripted.tools("mcp:s/nope")
    assert set(await scripted.tools("mcp:s/echo", {"echo": None})) == {"s__echo"}


async def test_huge_result_is_refused(scripted: MCPClients) -> None:
    huge = (await scripted.tools("mcp:s/huge"))["huge"]
    with pytest.raises(ToolError, match=r"answer was \d{8} bytes, over the limit "
                                        r"\(mcp.servers.s.max_result is 1048576\)"):
        await huge.call({}, None)
    assert await (await scripted.tools("mcp:s/echo"))["echo"].call({"text": "ok"}, None) == "ok"


async def test_a_call_that_never_returns_times_out(scripted: MCPClients) -> None:
    sleep = (await scripted.tools("mcp:quick/sleep"))["sleep"]
    with pytest.raises(ToolError, match="did not answer within 1s"):
        await sleep.call({}, None)


async def test_a_server_that_dies_is_started_again(scripted: MCPClients) -> None:
    server = scripted.server("s")
    await server.tools()
    before = server.starts
    with pytest.raises(ToolError, match="exited during the call"):
        await server.call("die", {})
    assert await server.call("echo", {"text": "back"}) == "back"
    assert server.starts == before + 1


@pytest.mark.parametrize(("mode", "expected"), [
    ("silent", "did not complete the MCP handshake within 1s"),
    ("garbage", "wrote what is not MCP"),
])
async def test_silent_and_garbage_servers(mode: str, expected: str) -> None:
    group = MCPClients({"bad": ServerConfig("bad", command=(sys.executable, SCRIPTED, mode),
                                            startup_timeout=1.0, restart_delay=60.0)})
    try:
        with pytest.raises(ToolError, match=expected):
            await group.tools("mcp:bad")
        with pytest.raises(ToolError, match=expected):  # no new start until restart_delay
            await group.tools("mcp:bad")
        assert group.server("bad").starts == 1
    finally:
        await group.aclose()


async def test_a_missing_program_is_a_tool_error() -> None:
    group = MCPClients({"x": ServerConfig("x", command=("/nonexistent/mcp-server",))})
    try:
        with pytest.raises(ToolError, match="MCP server x could not be started"):
            await group.tools("mcp:x")
    finally:
        await group.aclose()


async def test_servers_stop_at_shutdown(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    pidfile = tmp_path / "pid"
    servers = f"    s: {{command: {json.dumps([sys.executable, SCRIPTED, 'ok', str(pidfile)])}}}"
    async with run_daemon(tmp_path, {"p": pipe("[mcp:s]")},
                          config=config(upstream, servers)) as d:
        assert not pidfile.exists(), "servers start lazily"
        upstream.plan("m1", Reply(tool_calls=(("echo", {"text": "hey"}),)))
        assert await post(d, "p", "go") == (200, "tool said: hey")
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        await wait_until(lambda: _gone(pid), timeout=5.0)
        os.kill(pid, 0)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_reload_that_changes_mcp_restarts_the_servers() -> None:
    from harkd.core.registry import default
    from harkd.services import Services
    from harkd.settings import Settings
    from harkd.tools.mcp_client import clients

    def settings(text: str) -> Settings:
        ok = [sys.executable, SCRIPTED, "ok"]
        return Settings(extra={"mcp": {"servers": {"s": {"command": ok, "env": {"V": text}}}}})

    services = Services(settings("1"), default())
    try:
        first = clients(services)
        await first.server("s").tools()
        assert clients(services) is first, "unchanged settings: the same servers"
        await services.swap_settings(settings("2"))
        second = clients(services)
        assert second is not first and second.server("s").config.env == {"V": "2"}
        await wait_until(lambda: not first.server("s").running)
    finally:
        await services.aclose()


def test_harkd_list_tools(tmp_path: Path) -> None:
    (tmp_path / "harkd.yaml").write_text(
        f"mcp:\n  servers:\n    time: {{command: {json.dumps(list(TIME))}}}\n"
        "    gone: {command: [/bin/sh, -c, 'echo boom >&2; exit 3']}\n")
    r = subprocess.run([sys.executable, "-m", "harkd", "list", "--tools", "--json",
                        "--config", str(tmp_path / "harkd.yaml")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    listed = json.loads(r.stdout)["tools"]
    rows = {row["source"]: row for row in listed}
    assert {"mcp:time/get_current_time", "mcp:time/convert_time"} <= set(rows)
    assert rows["mcp:time/get_current_time"]["name"] == "get_current_time"
    assert "exited at start" in rows["mcp:gone"]["error"]
    assert {"name": "calculator", "source": "builtin"}.items() <= next(
        row for row in listed if row["name"] == "calculator").items()
    assert r.returncode == 1, "a server that fails makes the listing fail"


async def test_concurrent_calls_and_a_kill_while_idle(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    group = MCPClients({"s": ServerConfig(
        "s", command=(sys.executable, SCRIPTED, "ok", str(pidfile)), restart_delay=0.0)})
    try:
        server = group.server("s")
        texts = [f"t{i}" for i in range(10)]
        results = await asyncio.gather(*(server.call("echo", {"text": t}) for t in texts))
        assert results == texts and server.starts == 1
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        await wait_until(lambda: not server.running)
        assert await server.call("echo", {"text": "again"}) == "again"
        assert server.starts == 2
    finally:
        await group.aclose()


async def test_a_new_connection_outlives_the_old_one_closing() -> None:
    group = MCPClients({"s": ServerConfig("s", command=(sys.executable, SCRIPTED, "ok"),
                                          restart_delay=0.0)})
    try:
        server = group.server("s")
        with pytest.raises(ToolError, match="exited during the call"):
            await server.call("hangup", {})
        closing = server._task  # the old connection: its process lingers, so it closes slowly
        assert closing is not None and not closing.done()
        assert await server.call("echo", {"text": "new"}) == "new"
        await closing
        assert server.running, "the old connection's end must not end the new one"
        assert await server.call("echo", {"text": "still"}) == "still"
        assert server.starts == 2
    finally:
        await group.aclose()
