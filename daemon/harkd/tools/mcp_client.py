"""Tools from MCP servers: ``harkd.yaml``'s ``mcp.servers``, offered to ``llm`` steps.

An ``llm`` step names ``mcp:NAME`` (every tool of server NAME) or ``mcp:NAME/TOOL`` in its
``tools:``. Servers start on first use, are shared by every pipeline of the daemon, are
started again after they die (at most once per ``restart_delay``), and are stopped at
shutdown. Each connection lives in one task of its own, which holds the transport (harkd's
size-capped stdio one, :mod:`harkd.tools.mcp_stdio`, or the SDK's streamable HTTP one)
and the SDK's ``ClientSession``; calls from any run go through the shared session.

Whatever a server does wrong becomes a :class:`~harkd.tools.ToolError` naming the server:
it cannot start or exits at start (with the tail of its stderr), writes garbage, never
answers (``startup_timeout``, ``timeout``), returns more than ``max_result`` bytes, or
gets arguments that fail its tool's input schema (checked before the call). The ``mcp``
SDK is imported only when a server is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..logs import get_logger
from .mcp_config import PREFIX, SCHEMA, ServerConfig, parse, split_ref
from .registry import Tool, ToolError

if TYPE_CHECKING:
    from ..contracts import Services
    from ..settings import Settings

log = get_logger("harkd.mcp")

SHARED_KEY = "mcp_clients"

__all__ = ["PREFIX", "SCHEMA", "MCPClients", "MCPServer", "ServerConfig", "clients",
           "list_tools", "parse", "split_ref"]


class MCPServer:
    """One configured server: its connection task, its tools, and restarts."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._session: Any = None
        self._tools: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failed: tuple[float, ToolError] | None = None
        self._validators: dict[str, Any] = {}
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._session is not None

    async def tools(self) -> dict[str, Any]:
        """The server's tools (``mcp.types.Tool`` by name), starting it if needed."""
        await self._ensure()
        return dict(self._tools)

    async def call(self, tool: str, args: Mapping[str, Any]) -> str:
        """Call one tool; its text result, or a ToolError."""
        import anyio
        from mcp.shared.exceptions import McpError

        name = f"mcp:{self.config.name}/{tool}"
        session = await self._ensure()
        spec = self._tools.get(tool)
        if spec is None:
            raise ToolError(f"{name}: no such tool (the server has "
                            f"{', '.join(sorted(self._tools)) or 'none'})")
        self._check_args(tool, spec, args)
        self._inflight += 1
        self._idle.clear()
        try:
            with anyio.fail_after(self.config.timeout):
                result = await session.call_tool(tool, dict(args))
        except TimeoutError:
            raise ToolError(f"{name} did not answer within {self.config.timeout:g}s") from None
        except McpError as exc:
            if not self.running:
                raise ToolError(f"{name}: the server exited during the call; it is "
                                "started again on next use") from None
            raise ToolError(f"{name} failed: {exc.error.message}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            self._stop()
            raise ToolError(f"{name}: the connection to the server broke; it is started "
                            "again on next use") from None
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        text = result_text(result)
        size = len(text.encode())
        if size > self.config.max_result:
            raise ToolError(f"{name} returned {size} bytes, over the limit of "
                            f"{self.config.max_result} (mcp.servers.{self.config.name}"
                            ".max_result)")
        if result.isError:
            raise ToolError(f"{name} failed: {text}")
        return text

    def _check_args(self, tool: str, spec: Any, args: Mapping[str, Any]) -> None:
        import jsonschema

        validator = self._validators.get(tool)
        if validator is None:
            try:
                validator = jsonschema.Draft202012Validator(dict(spec.inputSchema or {}))
            except (TypeError, jsonschema.SchemaError):
                validator = jsonschema.Draft202012Validator({})
            self._validators[tool] = validator
        error = next(iter(validator.iter_errors(dict(args))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise ToolError(f"bad arguments for mcp:{self.config.name}/{tool}: "
                            f"{error.message}" + (f" at /{where}" if where else ""))

    async def _ensure(self) -> Any:
        if self._session is not None:
            return self._session
        async with self._lock:
            if self._session is not None:
                return self._session
            if self._failed is not None and time.monotonic() < self._failed[0]:
                raise self._failed[1]
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # Each connection has its own wake-up: an old one still closing must not
            # touch the new one.
            self._wake = wake = asyncio.Event()
            self.starts += 1
            self._task = asyncio.create_task(self._run(ready, wake),
                                             name=f"mcp:{self.config.name}")
            try:
                await ready
            except ToolError as exc:
                self._failed = (time.monotonic() + self.config.restart_delay, exc)
                raise
            self._failed = None
            return self._session

    async def _run(self, ready: asyncio.Future[None], wake: asyncio.Event) -> None:
        """Hold the connection open until stopped or the server goes away."""
        import anyio
        from mcp import ClientSession

        c = self.config
        # closed in the finally below, after the transport that writes to it has exited
        errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        state: dict[str, Any] = {"garbage": None, "ended": False, "session": None}
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(_transport(c, errlog))
                inbox_in, inbox = anyio.create_memory_object_stream[Any](0)
                group = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(group.cancel_scope.cancel)
                group.start_soon(self._pump, read, inbox_in, state, wake)
                session = await stack.enter_async_context(ClientSession(inbox, write))
                with anyio.fail_after(c.startup_timeout):
                    info = await session.initialize()
                    listed = await session.list_tools()
                self._tools = {t.name: t for t in listed.tools}
                self._validators = {}
                self._session = state["session"] = session
                log.info("mcp_server_started", server=c.name, tools=len(self._tools),
                         server_name=info.serverInfo.name, version=info.serverInfo.version)
                ready.set_result(None)
                await wake.wait()
                if state["ended"]:
                    # The session fails the calls in flight with "connection closed"
                    # once it has seen the end; let it, rather than cancel them unanswered.
                    with anyio.move_on_after(1.0):
                        await self._idle.wait()
        except Exception as exc:  # noqa: BLE001 - the SDK and the transports raise many types
            if not ready.done():
                ready.set_exception(self._start_error(exc, errlog, state))
            else:
                log.warning("mcp_server_failed", server=c.name,
                            error=f"{type(exc).__name__}: {exc}")
        finally:
            if self._session is not None and self._session is state["session"]:
                self._session = None
            errlog.close()
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                log.info("mcp_server_stopped", server=c.name)
            elif not ready.done():
                ready.set_exception(ToolError(f"MCP server {c.name} stopped while starting"))

    async def _pump(self, read: Any, inbox_in: Any, state: dict[str, Any],
                    wake: asyncio.Event) -> None:
        """Pass the server's messages to the session; when they end, the server is gone."""
        async with inbox_in:
            async for item in read:
                if isinstance(item, Exception) and state["garbage"] is None:
                    state["garbage"] = str(item).splitlines()[0][:200]
                await inbox_in.send(item)
        state["ended"] = True
        if self._session is not None and self._session is state["session"]:
            log.warning("mcp_server_exited", server=self.config.name)
            self._session = None
        wake.set()

    def _start_error(self, exc: BaseException, errlog: Any, state: dict[str, Any]
                     ) -> ToolError:
        c = self.config
        garbage = state["garbage"]
        exc = _leaf(exc)
        if state["ended"]:
            why = "exited at start"
        elif isinstance(exc, TimeoutError):
            why = f"did not complete the MCP handshake within {c.startup_timeout:g}s"
        elif isinstance(exc, FileNotFoundError | PermissionError):
            why = f"could not be started: {exc}"
        else:
            why = f"failed to start ({type(exc).__name__}: {_message(exc)})"
        if garbage:
            why += f"; it wrote what is not MCP: {garbage}"
        errlog.seek(0)
        tail = errlog.read()[-600:].strip()
        if tail:
            why += f"; its stderr ends: {tail}"
        log.warning("mcp_server_start_failed", server=c.name, error=why)
        return ToolError(f"MCP server {c.name} {why}")

    def _stop(self) -> None:
        self._session = None
        self._wake.set()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._stop()
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(5.0):
                    await task
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _transport(c: ServerConfig, errlog: Any) -> Any:
    if c.url is not None:
        return _http_transport(c)
    from .mcp_stdio import stdio_transport

    # A message carries the result JSON-escaped, with its envelope: room for both.
    limit = 2 * c.max_result + 64 * 1024
    return stdio_transport(list(c.command), dict(c.env) or None, c.cwd, errlog, limit,
                           f"mcp.servers.{c.name}.max_result is {c.max_result}")


@contextlib.asynccontextmanager
async def _http_transport(c: ServerConfig) -> Any:
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    assert c.url is not None
    timeout = httpx.Timeout(max(c.startup_timeout, c.timeout), read=300.0)
    async with httpx.AsyncClient(headers=dict(c.headers), timeout=timeout) as http, \
            streamable_http_client(c.url, http_client=http) as (read, write, _):
        yield read, write


def _leaf(exc: BaseException) -> BaseException:
    """The telling exception inside the task groups' exception groups: a timeout or an
    OS error if there is one, else the first."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [_leaf(e) for e in exc.exceptions]
    for leaf in leaves:
        if isinstance(leaf, TimeoutError | OSError):
            return leaf
    return leaves[0] if leaves else exc


def _message(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_message(e) for e in exc.exceptions)
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or exc)[:300]


def result_text(result: Any) -> str:
    """A ``CallToolResult`` as the text the model sees: its text parts joined, other
    parts named, or its structured content as JSON."""
    parts: list[str] = []
    for item in result.content or ():
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(str(item.text))
        elif kind == "resource" and hasattr(item.resource, "text"):
            parts.append(str(item.resource.text))
        else:
            parts.append(f"[{kind} content]")
    if not parts and getattr(result, "structuredContent", None) is not None:
        return json.dumps(result.structuredContent, ensure_ascii=False)
    return "\n".join(parts)


class MCPClients:
    """Every configured server of one daemon, shared by all pipelines."""

    def __init__(self, configs: Mapping[str, ServerConfig], source: Any = None) -> None:
        self.servers = {name: MCPServer(c) for name, c in configs.items()}
        #: the ``mcp:`` section these were built from (a reload compares it)
        self.source = source

    def server(self, name: str) -> MCPServer:
        found = self.servers.get(name)
        if found is None:
            raise ToolError(f"no MCP server {name!r} in harkd.yaml's mcp.servers "
                            f"(servers: {', '.join(sorted(self.servers)) or 'none'})")
        return found

    async def tools(self, ref: str, taken: Mapping[str, Any] = {}) -> dict[str, Tool]:
        """The harkd tools ``mcp:NAME`` or ``mcp:NAME/TOOL`` stands for. A name that
        ``taken`` already has is offered as ``NAME__TOOL``."""
        name, only = split_ref(ref)
        server = self.server(name)
        specs = await server.tools()
        if only is not None:
            if only not in specs:
                raise ToolError(f"MCP server {name} has no tool {only!r} (tools: "
                                f"{', '.join(sorted(specs)) or 'none'})")
            specs = {only: specs[only]}
        out: dict[str, Tool] = {}
        for tool_name, spec in specs.items():
            exposed = tool_name if tool_name not in taken else f"{name}__{tool_name}"
            out[exposed] = as_tool(server, spec, exposed)
        return out

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in self.servers.values()))


def as_tool(server: MCPServer, spec: Any, exposed: str) -> Tool:
    """One MCP tool as a harkd :class:`Tool` (the server enforces its own timeout)."""
    remote = str(spec.name)

    async def call(**args: Any) -> str:
        return await server.call(remote, args)

    schema = dict(spec.inputSchema or {"type": "object"})
    description = str(spec.description or f"{remote} (MCP server {server.config.name})")
    return Tool(exposed, description, schema, call, timeout=server.config.timeout + 1.0)


def clients(services: Services) -> MCPClients:
    """The daemon's MCP clients, built from its settings on first use and again when a
    reload changed ``mcp:`` (the old servers are then stopped)."""
    raw = services.settings.extra.get("mcp")
    found: MCPClients | None = services.shared.get(SHARED_KEY)
    if found is None or found.source != raw:
        if found is not None:
            services.spawn(found.aclose())
        found = services.shared[SHARED_KEY] = MCPClients(parse(raw), raw)
    return found


async def list_tools(settings: Settings) -> list[dict[str, Any]]:
    """Every configured server's tools (each started, listed and stopped), for
    ``harkd list --tools``; a server that fails is listed with its error."""
    group = MCPClients(parse(settings.extra.get("mcp")))
    rows: list[dict[str, Any]] = []
    try:
        for name, server in sorted(group.servers.items()):
            try:
                specs = await server.tools()
            except ToolError as exc:
                rows.append({"name": f"mcp:{name}", "source": f"mcp:{name}",
                             "description": "", "error": str(exc)})
                continue
            for tool_name, spec in sorted(specs.items()):
                rows.append({"name": tool_name, "source": f"mcp:{name}/{tool_name}",
                             "description": str(spec.description or "").split("\n")[0]})
    finally:
        await group.aclose()
    return rows
