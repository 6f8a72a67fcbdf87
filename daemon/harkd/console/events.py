"""Server-sent events for the console: pipeline changes, runs, and the live log.

:class:`Hub` is told of every pipeline change (a catalog listener) and every run (a run
observer) and fans them out to the open ``/ui/events`` streams. Each stream has a bounded
queue: a browser that does not read loses events (it reloads what it shows on the next
one), it never makes the daemon buffer without end. ``/ui/logs/stream`` reads
:data:`harkd.logs.TAIL`.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..logs import LEVELS, TAIL

if TYPE_CHECKING:
    from ..catalog import Entry
    from ..core.run import Run, RunResult
    from ..http.host import Host

HUB_KEY = "console.hub"
QUEUE = 256
PING = 15.0


class Hub:
    """Fans pipeline and run events out to the console's open event streams."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon
        self.queues: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self.closed = False

    @classmethod
    def of(cls, daemon: Host) -> Hub:
        """The daemon's hub, created (and registered as listener and observer) once."""
        hub = daemon.services.shared.get(HUB_KEY)
        if not isinstance(hub, cls):
            hub = daemon.services.shared[HUB_KEY] = cls(daemon)
            daemon.catalog.listeners.append(hub.pipeline_changed)
            daemon.services.observers.append(hub)
        return hub

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for q in self.queues:
            if q.full():
                continue  # a browser that does not read misses events, nothing more
            q.put_nowait((kind, data))

    def pipeline_changed(self, entry: Entry, what: str) -> None:
        if self.queues:
            self.publish("pipeline", {"name": entry.name, "state": what,
                                      "version": entry.version})

    def run_started(self, run: Run) -> None:
        if self.queues:
            self.publish("run", {"id": run.id, "pipeline": run.pipeline.name,
                                 "status": "running"})

    def run_finished(self, run: Run, result: RunResult) -> None:
        if self.queues:
            self.publish("run", {"id": run.id, "pipeline": run.pipeline.name,
                                 "status": result.status})

    async def close(self) -> None:
        """End every open stream (the daemon is stopping)."""
        self.closed = True
        for q in self.queues:
            while q.full():
                q.get_nowait()
            q.put_nowait(None)


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    return response


def _event(kind: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, default=str)
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    """``GET /ui/events``: ``pipeline`` and ``run`` events as they happen."""
    from ..http.host import HOST

    daemon = request.app[HOST]
    hub = Hub.of(daemon)
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(QUEUE)
    hub.queues.add(queue)
    try:
        response = await _open(request)
        while not hub.closed:
            try:
                async with asyncio.timeout(PING):
                    item = await queue.get()
            except TimeoutError:
                item = ("ping", {})
            if item is None:
                break
            if not await _send(response, b": ping\n\n" if item[0] == "ping"
                               else _event(*item)):
                break
    finally:
        hub.queues.discard(queue)
    return response


async def _send(response: web.StreamResponse, data: bytes) -> bool:
    """Write to an event stream; False once the browser has gone."""
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError):
        return False
    return True


def log_filter(pipeline: str | None, level: str | None) -> Any:
    """A predicate on log lines: of ``pipeline`` (when given), at ``level`` or above."""
    floor = LEVELS.get(level or "", 0)

    def keep(line: dict[str, Any]) -> bool:
        if pipeline and line.get("pipeline") != pipeline:
            return False
        return LEVELS.get(str(line.get("level", "")), 0) >= floor

    return keep


async def stream_logs(request: web.Request) -> web.StreamResponse:
    """``GET /ui/logs/stream?pipeline=&level=&after=``: log lines, each as a ``log``
    event whose id is its ``seq`` (a reconnecting browser resumes after the last one)."""
    from ..http.host import HOST

    daemon = request.app[HOST]
    hub = Hub.of(daemon)
    q = request.query
    keep = log_filter(q.get("pipeline"), q.get("level"))
    try:
        seq = int(request.headers.get("Last-Event-ID") or q.get("after") or 0)
    except ValueError:
        seq = 0
    response = await _open(request)
    idle = 0.0
    while not hub.closed and not daemon.stop_event.is_set():
        lines = await TAIL.wait(seq, 1.0)
        if not lines:
            idle += 1.0
            if idle >= PING:
                if not await _send(response, b": ping\n\n"):
                    break
                idle = 0.0
            continue
        seq = lines[-1]["seq"]
        out = b"".join(_event("log", line, line["seq"]) for line in lines if keep(line))
        if out and not await _send(response, out):
            break
    return response
