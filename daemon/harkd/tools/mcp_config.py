"""The ``mcp:`` section of ``harkd.yaml``: its JSON Schema and its parsed, inert form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from .. import durations
from ..records import dataclass

PREFIX = "mcp:"

SERVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "One MCP server: a command to start (stdio) or a URL (streamable HTTP).",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "Program and arguments, e.g. [uvx, mcp-server-time]."},
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Extra environment (the server gets only PATH, HOME and "
                               "the like otherwise)."},
        "cwd": {"type": "string"},
        "url": {"type": "string", "pattern": "^https?://",
                "description": "A streamable HTTP endpoint, e.g. http://127.0.0.1:9000/mcp."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "HTTP headers (e.g. Authorization) for url."},
        "timeout": {**durations.SCHEMA, "default": "10s",
                    "description": "Longest one tool call may take."},
        "startup_timeout": {**durations.SCHEMA, "default": "10s",
                            "description": "Longest start, handshake and tool listing."},
        "restart_delay": {**durations.SCHEMA, "default": "2s",
                          "description": "After a failed start, calls fail at once this long."},
        "max_result": {"type": "integer", "minimum": 1, "default": 1048576,
                       "description": "Largest tool result in bytes; larger is an error."},
    },
    "oneOf": [{"required": ["command"]}, {"required": ["url"]}],
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "MCP (Model Context Protocol) servers whose tools llm steps may use as "
                   "mcp:NAME or mcp:NAME/TOOL.",
    "properties": {"servers": {"type": "object", "additionalProperties": SERVER_SCHEMA}},
}


@dataclass(frozen=True)
class ServerConfig:
    """One ``mcp.servers`` entry, parsed; inert."""

    name: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0
    startup_timeout: float = 10.0
    restart_delay: float = 2.0
    max_result: int = 1024 * 1024


def parse(section: Any) -> dict[str, ServerConfig]:
    """``mcp:`` of ``harkd.yaml`` as configs by name (the schema has checked its shape)."""
    servers = section.get("servers") if isinstance(section, Mapping) else None
    out: dict[str, ServerConfig] = {}
    for name, raw in (servers or {}).items():
        out[str(name)] = ServerConfig(
            name=str(name), command=tuple(str(c) for c in raw.get("command") or ()),
            env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
            cwd=str(raw["cwd"]) if raw.get("cwd") else None,
            url=str(raw["url"]) if raw.get("url") else None,
            headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
            timeout=durations.seconds(raw.get("timeout", "10s")),
            startup_timeout=durations.seconds(raw.get("startup_timeout", "10s")),
            restart_delay=durations.seconds(raw.get("restart_delay", "2s")),
            max_result=int(raw.get("max_result", 1024 * 1024)))
    return out


def split_ref(ref: str) -> tuple[str, str | None]:
    """``mcp:NAME/TOOL`` -> (NAME, TOOL); ``mcp:NAME`` -> (NAME, None)."""
    server, _, tool = ref.removeprefix(PREFIX).partition("/")
    return server, tool or None
