"""The stdio transport of harkd's MCP client: the SDK's framing, with a size cap.

The SDK's ``stdio_client`` rebuilds a growing string for every chunk of a long line and
has no limit, so one 10 MB answer kept harkd's event loop busy for seconds (measured:
4.3 s on a loaded 2-core machine). This transport reads into a ``bytearray``, drops any
message longer than ``limit`` bytes without keeping it, and answers the request it
belonged to with a JSON-RPC error saying so, so the call fails clearly and the connection
lives on. Everything else is the SDK's: ``JSONRPCMessage`` parsing, ``SessionMessage``,
the inherited environment, and stopping the process group (stdin closed, then SIGTERM,
then SIGKILL).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio

READ = 64 * 1024
STOP_GRACE = 2.0
_ID = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')


@contextlib.asynccontextmanager
async def stdio_transport(command: list[str], env: dict[str, str] | None, cwd: str | None,
                          errlog: Any, limit: int, where: str
                          ) -> AsyncIterator[tuple[Any, Any]]:
    """Start ``command``; yield the (read, write) streams a ``ClientSession`` takes.
    ``where`` names the limit in the error a too-long message gets."""
    from mcp.client.stdio import get_default_environment
    from mcp.os.posix.utilities import terminate_posix_process_tree

    environ = {**get_default_environment(), **(env or {})}
    process = await anyio.open_process(command, env=environ, cwd=cwd, stderr=errlog,
                                       start_new_session=sys.platform != "win32")
    read_in, read = anyio.create_memory_object_stream[Any](0)
    write, write_out = anyio.create_memory_object_stream[Any](0)
    async with process, anyio.create_task_group() as group:
        group.start_soon(_reader, process, read_in, limit, where)
        group.start_soon(_writer, process, write_out)
        try:
            yield read, write
        finally:
            if process.stdin is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError,
                                         OSError):
                    await process.stdin.aclose()
            with anyio.move_on_after(STOP_GRACE):
                await process.wait()
            if process.returncode is None:
                await terminate_posix_process_tree(process, STOP_GRACE)
            group.cancel_scope.cancel()
            for stream in (read, write, read_in, write_out):
                await stream.aclose()


async def _reader(process: Any, out: Any, limit: int, where: str) -> None:
    """Split stdout into lines; parse each as a JSON-RPC message (or pass on the parse
    error, as the SDK does); answer an over-long one's request with an error."""
    from mcp import types
    from mcp.shared.message import SessionMessage

    buf = bytearray()
    head: bytes | None = None  # the start of a message being dropped
    size = 0
    async with out:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError,
                                 anyio.BrokenResourceError):
            while True:
                chunk = await process.stdout.receive(READ)
                start = 0
                while True:
                    nl = chunk.find(b"\n", start)
                    piece = chunk[start:] if nl < 0 else chunk[start:nl]
                    if head is None:
                        buf += piece
                        if len(buf) > limit:
                            head, size = bytes(buf[:200]), len(buf)
                            buf.clear()
                    else:
                        size += len(piece)
                    if nl < 0:
                        break
                    start = nl + 1
                    if head is not None:
                        message: Any = _too_long(types, head, size, limit, where)
                        head = None
                        if message is None:
                            continue
                    elif not buf.strip():
                        continue
                    else:
                        try:
                            message = types.JSONRPCMessage.model_validate_json(bytes(buf))
                        except ValueError as exc:  # pydantic's ValidationError included
                            message = exc
                        buf.clear()
                    await out.send(message if isinstance(message, Exception)
                                   else SessionMessage(message))


def _too_long(types: Any, head: bytes, size: int, limit: int, where: str) -> Any:
    """The JSON-RPC error that answers a dropped message's request (None if it had no id)."""
    m = _ID.search(head)
    if m is None:
        return None
    raw = m.group(1)
    ident: str | int = raw[1:-1].decode() if raw.startswith(b'"') else int(raw)
    error = types.ErrorData(code=-32000, message=f"the server's answer was {size} bytes, "
                            f"over the limit ({where})")
    return types.JSONRPCMessage(types.JSONRPCError(jsonrpc="2.0", id=ident, error=error))


async def _writer(process: Any, messages: Any) -> None:
    async with messages:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError,
                                 OSError):
            async for message in messages:
                data = message.message.model_dump_json(by_alias=True, exclude_none=True)
                await process.stdin.send(data.encode() + b"\n")
