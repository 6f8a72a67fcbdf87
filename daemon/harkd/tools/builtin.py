"""The built-in tools, safe by default: the time, a calculator, an allowlisted HTTP GET and
reading files under one configured folder. They register through the ``harkd.tools``
entry points like any plugin's tools.

``http_get`` refuses every host until ``tools.http_get.allow`` lists some; ``read_file``
refuses everything until ``tools.read_file.root`` names a folder, and never leaves it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import urllib.parse
import zoneinfo
from pathlib import Path

from .calc import evaluate
from .registry import ToolContext, ToolError, tool

MAX_BYTES = 64 * 1024


@tool(name="time", register=False)
def current_time(timezone: str = "UTC") -> str:
    """The current date and time.

    Args:
        timezone: An IANA time zone such as Europe/Paris (default UTC).
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    now = dt.datetime.now(zone)
    return f"{now.strftime('%A')} {now.isoformat(timespec='seconds')} ({timezone})"


@tool(name="calculator", register=False)
def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly, e.g. (3 + 4) * 2 / sqrt(16).

    Args:
        expression: Numbers, + - * / // % ** (or ^), parentheses, pi, e, and the functions
            sqrt, sin, cos, tan, log, log10, exp, abs, round, floor, ceil, min, max.
    """
    return evaluate(expression)


def host_allowed(host: str, allow: list[str]) -> bool:
    """Whether ``host`` matches an allowlist entry (exact, or a ``*.example.com`` pattern)."""
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allow)


@tool(name="http_get", register=False, timeout=15.0)
async def http_get(url: str, ctx: ToolContext) -> str:
    """Fetch a web page or API answer with HTTP GET (only hosts the owner allowed).

    Args:
        url: The http or https URL to fetch.
    """
    conf = ctx.section("http_get")
    allow = [str(h) for h in conf.get("allow") or []]
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError("give an http:// or https:// URL")
    if not host_allowed(parts.hostname, allow):
        raise ToolError(f"host {parts.hostname} is not in tools.http_get.allow "
                        f"(allowed: {', '.join(allow) or 'none'})")
    import aiohttp

    limit = int(conf.get("max_bytes", MAX_BYTES))
    session = ctx.services.http() if ctx.services is not None else None
    if session is None:
        raise ToolError("http_get needs the daemon's services")
    try:
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.content.read(limit + 1)
            if 300 <= resp.status < 400:
                return f"HTTP {resp.status} redirect to {resp.headers.get('Location', '?')}"
            text = body[:limit].decode(resp.charset or "utf-8", errors="replace")
            suffix = "\n[truncated]" if len(body) > limit else ""
            return f"HTTP {resp.status}\n{text}{suffix}"
    except aiohttp.ClientError as exc:
        raise ToolError(f"GET {url} failed: {exc}") from None


def safe_path(root: Path, relative: str) -> Path:
    """``relative`` inside ``root``; raises ToolError if it would leave it (``..``,
    an absolute path, a symlink pointing out)."""
    base = root.resolve()
    candidate = (base / relative.lstrip("/")).resolve()
    if candidate != base and not candidate.is_relative_to(base):
        raise ToolError(f"{relative!r} is outside the readable folder")
    return candidate


@tool(name="read_file", register=False)
def read_file(path: str, ctx: ToolContext) -> str:
    """Read a text file from the folder the owner made readable.

    Args:
        path: The file's path relative to that folder.
    """
    conf = ctx.section("read_file")
    root = conf.get("root")
    if not root:
        raise ToolError("reading files is off: set tools.read_file.root in harkd.yaml")
    target = safe_path(Path(str(root)).expanduser(), path)
    if not target.is_file():
        raise ToolError(f"no file {path!r}")
    limit = int(conf.get("max_bytes", MAX_BYTES))
    with target.open("rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[truncated]" if len(data) > limit else "")


TIME = current_time
CALCULATOR = calculator
HTTP_GET = http_get
READ_FILE = read_file
