"""A minimal MCP server over stdio for bench/mcp_overhead.py: one ``echo`` tool."""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP

server = FastMCP("bench-echo", log_level="WARNING")  # no log line per request


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
def huge() -> str:
    """Ten megabytes of text."""
    return "x" * (10 * 1024 * 1024)


if __name__ == "__main__":
    server.run()
