"""harkd's own MCP server: ``POST /mcp`` (streamable HTTP) offers pipelines as tools.

A pipeline opts in with a top-level ``mcp: {tool, description, input_schema}``. The tool's
arguments become the run's input (with no ``input_schema``, the tool takes
``{input: string}`` and the input is that string); the run's output is the tool's result,
text as it is and anything else as JSON; a failed run is a tool error with the run's error.

The official ``mcp`` SDK does the protocol: its low-level ``Server`` and its
``StreamableHTTPSessionManager`` in stateless mode, reached from aiohttp through a small
ASGI bridge. Both are built on the first request to ``/mcp`` (so a daemon that no client
asks never imports ``mcp``) and live in one task until shutdown. ``/mcp`` takes the same
bearer token as ``/api``; without a token (a loopback daemon) the SDK's DNS-rebinding
protection accepts only loopback Host and Origin headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..logs import get_logger

if TYPE_CHECKING:
    from ..core.pipeline import Pipeline
    from .host import Host

log = get_logger("harkd.mcp")

PATH = "/mcp"
DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["input"], "additionalProperties": False,
    "properties": {"input": {"type": "string", "description": "What to send the pipeline."}}}


def tool_name(pipeline: Pipeline) -> str:
    """The MCP tool name of an opted-in pipeline."""
    conf = pipeline.mcp or {}
    return str(conf.get("tool") or pipeline.name.replace("-", "_").replace(".", "_"))


def offered(daemon: Host) -> dict[str, Pipeline]:
    """Tool name -> pipeline, for every serving pipeline with an ``mcp:`` block."""
    out: dict[str, Pipeline] = {}
    for entry in sorted(daemon.catalog.entries.values(), key=lambda e: e.name):
        if entry.bound is not None and entry.bound.pipeline.mcp is not None:
            out.setdefault(tool_name(entry.bound.pipeline), entry.bound.pipeline)
    return out


async def run_as_tool(daemon: Host, pipeline_name: str, arguments: Mapping[str, Any],
                      trigger: Mapping[str, Any]) -> tuple[bool, Any]:
    """Run a pipeline once with tool arguments; (ok, output or error message)."""
    bound = daemon.catalog.bound(pipeline_name)
    if bound is None:
        return False, f"pipeline {pipeline_name!r} is not loaded"
    conf = bound.pipeline.mcp or {}
    payload: Any = dict(arguments) if conf.get("input_schema") else arguments.get("input")
    run = bound.new_run(payload, dict(trigger))
    result = await bound.run(run)
    if not result.ok:
        return False, f"pipeline {pipeline_name} failed: {result.error}"
    return True, result.output


def as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    text = getattr(output, "text", None)  # a finished TextStream or speech
    if isinstance(text, str):
        return text
    return json.dumps(output, ensure_ascii=False, default=str)


class MCPEndpoint:
    """The SDK's server and session manager, started on first use; see the module doc."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon
        self._manager: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        manager = await self._started()
        return await _asgi(manager.handle_request, request)

    async def _started(self) -> Any:
        if self._manager is not None:
            return self._manager
        async with self._lock:
            if self._manager is None:
                manager = self._build()
                ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._task = asyncio.create_task(self._hold(manager, ready), name="mcp-server")
                await ready
                self._manager = manager
        return self._manager

    async def _hold(self, manager: Any, ready: asyncio.Future[None]) -> None:
        """Keep the session manager's task group open in one task until shutdown."""
        try:
            async with manager.run():
                ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - reported to the request that waits
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.error("mcp_endpoint_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._manager = None  # the next request builds a new one (run() is once only)

    def _build(self) -> Any:
        from mcp import types
        from mcp.server.lowlevel import Server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        from .. import __version__

        server: Any = Server("harkd", version=__version__)
        daemon = self.daemon

        @server.list_tools()  # type: ignore[untyped-decorator]
        async def list_tools() -> list[types.Tool]:
            return [types.Tool(name=name, description=str(
                (p.mcp or {}).get("description") or p.description or f"Run {p.name}."),
                inputSchema=dict((p.mcp or {}).get("input_schema") or DEFAULT_SCHEMA))
                for name, p in offered(daemon).items()]

        @server.call_tool()  # type: ignore[untyped-decorator]
        async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
            pipeline = offered(daemon).get(name)
            if pipeline is None:
                raise ValueError(f"no tool {name!r} (tools: "
                                 f"{', '.join(offered(daemon)) or 'none'})")
            ok, out = await run_as_tool(daemon, pipeline.name, arguments,
                                        {"kind": "mcp", "tool": name})
            if not ok:
                return types.CallToolResult(
                    content=[types.TextContent(type="text", text=str(out))], isError=True)
            return [types.TextContent(type="text", text=as_text(out))]

        security = None
        if not daemon.settings.token:
            host = daemon.settings.host
            hosts = sorted({"127.0.0.1", "localhost", "[::1]", host})
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=[f"{h}:*" for h in hosts],
                allowed_origins=[f"{s}://{h}:*" for h in hosts for s in ("http", "https")])
        return StreamableHTTPSessionManager(server, json_response=True, stateless=True,
                                            security_settings=security)

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _asgi(app: Any, request: web.Request) -> web.StreamResponse:
    """Serve one aiohttp request with an ASGI app (the SDK's transport)."""
    body = await request.read()
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    sock = transport.get_extra_info("sockname") if transport is not None else None
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": request.method, "scheme": request.scheme, "path": request.path,
        "raw_path": request.raw_path.split("?")[0].encode(), "root_path": "",
        "query_string": request.query_string.encode(),
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if peer else None,
        "server": tuple(sock[:2]) if sock else None,
    }
    sent_body = False
    disconnected = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    response: web.StreamResponse | None = None

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=int(message["status"]))
            for k, v in message.get("headers") or ():
                response.headers.add(k.decode("latin-1"), v.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body" and response is not None:
            data = message.get("body") or b""
            if data:
                await response.write(data)
            if not message.get("more_body"):
                await response.write_eof()

    try:
        await app(scope, receive, send)
    finally:
        disconnected.set()
    if response is None:
        return web.Response(status=500, text="the MCP transport sent no response")
    return response


def setup(app: web.Application, daemon: Host) -> None:
    """Add ``/mcp`` (GET, POST and DELETE, as the transport defines them)."""
    endpoint = MCPEndpoint(daemon)
    daemon.services.shared["mcp_endpoint"] = endpoint
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, PATH, endpoint.handle)
