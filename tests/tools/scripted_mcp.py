"""A scripted MCP server for fault injection (stdio): ``python scripted_mcp.py MODE [PIDFILE]``.

Modes: ``ok`` (a real server built with the SDK, with tools ``echo``, ``huge`` (10 MB),
``sleep`` (never returns), ``die`` (the process exits mid-call) and ``hangup``
(stdout closed mid-call, the process lingers)); ``silent`` (reads
requests, never answers); ``garbage`` (answers every line with text that is not JSON-RPC).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    mode = sys.argv[1]
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(str(os.getpid()))
    if mode == "silent":
        for _ in sys.stdin:
            pass
        return
    if mode == "garbage":
        for _ in sys.stdin:
            print("<html>this is not JSON-RPC</html>", flush=True)
        return
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("scripted")

    @server.tool()
    def echo(text: str, times: int = 1) -> str:
        """Repeat text."""
        return " ".join([text] * times)

    @server.tool()
    def huge() -> str:
        """Ten megabytes of text."""
        return "x" * (10 * 1024 * 1024)

    @server.tool()
    def sleep() -> str:
        """Never returns."""
        time.sleep(3600)
        return "late"

    @server.tool()
    def hangup() -> str:
        """Close stdout mid-call but stay alive (until stopped)."""
        os.close(1)
        time.sleep(3600)
        return "late"

    @server.tool()
    def die() -> str:
        """Exit the whole server mid-call."""
        os._exit(1)

    server.run()


if __name__ == "__main__":
    main()
