"""The ``websocket`` trigger: a WebSocket endpoint on the shared listener.

Text mode: each client message is one run's input (JSON when it parses, plain text
otherwise; a message that starts with ``{`` or ``[`` must be valid JSON). The server
answers with ``{"type": "delta", "text": ...}`` while a step streams, then
``{"type": "result", "output": ..., "run_id": ...}`` or ``{"type": "error", ...}``.
Messages of one connection run one at a time, in order, so a conversation keeps its
order; ``trigger.connection`` (and ``trigger.session``) name the connection, for an llm
step's ``session:``.

Hot reload: each message runs on the pipeline version that serves the path when the
message arrives (a run in flight finishes on its own version). A connection whose pipeline
is removed, moved or switched to another mode is closed with 1012 (service restart).

Replies go through a bounded outbox: a client that does not read until
``send_buffer`` bytes wait is disconnected, and its run cancelled, instead of being
buffered without end. A connection that closes or drops cancels its run.

Audio mode (``mode: audio``) hands the prepared connection to
:func:`harkd.voice.wsaudio.serve_audio`, imported when a connection arrives.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .. import durations
from ..auth import AUTH_SCHEMA, Auth, Unauthorized, build_auth
from ..core.bound import Bound
from ..core.registry import TriggerKind
from ..core.run import Event, RunResult
from ..logs import get_logger
from ..records import dataclass
from ..values import jsonable
from .http import error_response, trigger_data
from .mic import check_wake

if TYPE_CHECKING:
    from aiohttp import web

    from ..contracts import Services
    from ..core.pipeline import Build

log = get_logger("harkd.websocket")

SHARED_KEY = "websocket.connections"
AUDIO_MODULE = "harkd.voice.wsaudio"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=jsonable)


def parse_message(text: str) -> Any:
    """A client message as a run's input; raises ValueError for broken JSON."""
    stripped = text.lstrip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if stripped[:1] in ("{", "["):
            raise ValueError(f"message is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
        return text


class Connections:
    """Open WebSocket connections of one daemon, counted per pipeline.

    Kept in ``services.shared`` so that the per-pipeline limit spans reloads, metrics can
    read the counts, and a shutdown can close every socket.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = collections.Counter()
        self.sockets: set[web.WebSocketResponse] = set()

    @classmethod
    def of(cls, services: Services) -> Connections:
        conns = services.shared.get(SHARED_KEY)
        if not isinstance(conns, cls):
            conns = services.shared[SHARED_KEY] = cls()
        return conns

    def admit(self, pipeline: str, limit: int) -> bool:
        if self.counts[pipeline] >= limit:
            return False
        self.counts[pipeline] += 1
        return True

    def release(self, pipeline: str) -> None:
        self.counts[pipeline] -= 1
        if self.counts[pipeline] <= 0:
            del self.counts[pipeline]

    async def close_all(self) -> None:
        """Close every open socket with 1001 (going away): the daemon is stopping."""
        from aiohttp import WSCloseCode
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"harkd stopping")
                               for ws in list(self.sockets)), return_exceptions=True)


@dataclass(frozen=True, eq=False)
class WebSocketTrigger:
    """A compiled WebSocket endpoint."""

    path: str
    mode: str
    auth: Auth
    max_message: int
    max_connections: int
    heartbeat: float | None
    send_buffer: int
    max_pending: int
    audio: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "websocket"

    @property
    def routes(self) -> tuple[str, ...]:
        return (self.path,)

    def describe(self) -> dict[str, Any]:
        return {"kind": "websocket", "path": self.path, "mode": self.mode,
                "auth": self.auth.describe(), "max_message": self.max_message,
                "max_connections": self.max_connections}

    route_only = True  # serve() only reports started (not a dataclass field)

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        started()

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse:
        from aiohttp import web
        try:
            self.auth.check(request.headers, request.query, b"")
        except Unauthorized as exc:
            return error_response(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=self.max_message,
                                   compress=False)
        if not ws.can_prepare(request).ok:
            return error_response(426, "this path takes WebSocket connections",
                                  headers={"Upgrade": "websocket"})
        conns = Connections.of(bound.services)
        if not conns.admit(bound.name, self.max_connections):
            log.warning("ws_refused", pipeline=bound.name, limit=self.max_connections)
            return error_response(503, f"pipeline {bound.name!r} has its maximum of "
                                       f"{self.max_connections} connections",
                                  headers={"Retry-After": "5"})
        try:
            await ws.prepare(request)
            conns.sockets.add(ws)
            trigger = trigger_data(request, "websocket")
            connection = uuid.uuid4().hex[:16]
            trigger["connection"] = connection
            trigger["session"] = request.query.get("session") or connection
            if self.mode == "audio":
                await _serve_audio(ws, bound, trigger, self)
            else:
                await TextConnection(ws, request, self, bound, trigger).serve()
        finally:
            conns.sockets.discard(ws)
            conns.release(bound.name)
        return ws


async def _serve_audio(ws: web.WebSocketResponse, bound: Bound, trigger: dict[str, Any],
                       spec: WebSocketTrigger) -> None:
    from aiohttp import WSCloseCode
    try:
        module = importlib.import_module(AUDIO_MODULE)
    except ImportError as exc:
        log.error("ws_audio_unavailable", pipeline=bound.name, error=str(exc))
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"audio mode unavailable")
        return
    params = {"path": spec.path, "max_message": spec.max_message,
              "send_buffer": spec.send_buffer, **spec.audio}
    await module.serve_audio(ws, bound, trigger, params)


class TextConnection:
    """One text-mode client: reads messages, runs them in order, sends the replies.

    The receive loop never waits for a run, so it sees a close or a drop at once and
    cancels the run in flight. Replies wait in a bounded outbox that one writer task
    empties; the worker and writer tasks exist only while there is work.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.Request,
                 spec: WebSocketTrigger, bound: Bound, trigger: dict[str, Any]) -> None:
        self.ws = ws
        self.request = request
        self.spec = spec
        self.bound = bound
        self.trigger = trigger
        self.inbox: collections.deque[str] = collections.deque()
        self.outbox: collections.deque[str] = collections.deque()
        self.pending = 0
        self.messages = 0
        self.worker: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.closing = False

    async def serve(self) -> None:
        from aiohttp import WSMsgType
        log.debug("ws_connected", pipeline=self.bound.name, connection=self.trigger["connection"])
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    self._received(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.send({"type": "error", "message": "binary frames are not accepted "
                               "in text mode; send text or JSON"})
                elif msg.type == WSMsgType.ERROR:
                    log.info("ws_receive_failed", pipeline=self.bound.name,
                             error=str(self.ws.exception()), code=self.ws.close_code)
                    break
        finally:
            self.closing = True
            await _cancel(self.worker)
            await _cancel(self.writer)
            log.debug("ws_closed", pipeline=self.bound.name,
                      connection=self.trigger["connection"], messages=self.messages)

    def _received(self, text: str) -> None:
        if len(self.inbox) >= self.spec.max_pending:
            self.send({"type": "error", "message": f"{len(self.inbox)} messages are already "
                       "waiting; wait for a result before sending more"})
            return
        self.inbox.append(text)
        if self.worker is None:
            self.worker = asyncio.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self.inbox and not self.closing:
                await self._one(self.inbox.popleft())
        finally:
            self.worker = None

    async def _one(self, text: str) -> None:
        from aiohttp import WSCloseCode
        bound = self._current()
        if bound is None:
            self.send({"type": "error", "message": "this pipeline was removed or changed; "
                       "reconnect"})
            await self._close(WSCloseCode.SERVICE_RESTART, b"pipeline changed", flush=True)
            return
        try:
            data = parse_message(text)
        except ValueError as exc:
            self.send({"type": "error", "message": str(exc)})
            return
        self.messages += 1
        trigger = {**self.trigger, "message": self.messages}
        run = bound.new_run(data, trigger, self._emit, streaming=True)
        result = await bound.run(run)
        self.send(reply(result))

    def _current(self) -> Bound | None:
        """The version serving this path now: a reload takes effect at the next message."""
        catalog = self.bound.services.catalog
        if catalog is None:
            return self.bound
        bound: Bound | None = catalog.route(self.spec.path)
        if bound is None or bound.name != self.bound.name:
            return None
        trigger = bound.pipeline.trigger
        if not isinstance(trigger, WebSocketTrigger) or trigger.mode != self.spec.mode:
            return None
        return bound

    async def _emit(self, event: Event) -> None:
        if not any(isinstance(v, bytes | bytearray) for v in event.values()):
            self.send(event)
        if self.outbox or self.closing:
            # Let the writer (and a pending disconnect) run: a step that streams without
            # ever waiting must not fill the outbox of a client that reads fine.
            await asyncio.sleep(0)

    def send(self, event: Event) -> None:
        """Queue one message for the client; disconnect a client that does not read."""
        if self.closing:
            return
        text = _dumps(event)
        if self.pending + len(text) > self.spec.send_buffer:
            log.warning("ws_client_not_reading", pipeline=self.bound.name,
                        connection=self.trigger["connection"], pending=self.pending,
                        limit=self.spec.send_buffer)
            self.closing = True
            asyncio.get_running_loop().create_task(self._drop_slow())
            return
        self.outbox.append(text)
        self.pending += len(text)
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self.outbox:
                text = self.outbox.popleft()
                try:
                    await self.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self.outbox.clear()
                    self.pending = 0
                    return
                finally:
                    self.pending -= len(text)
        finally:
            self.writer = None

    async def _drop_slow(self) -> None:
        from aiohttp import WSCloseCode
        await _cancel(self.worker)
        await self._close(WSCloseCode.POLICY_VIOLATION, b"client is not reading")

    async def _close(self, code: int, message: bytes, *, flush: bool = False) -> None:
        """Close the connection with ``code``; with ``flush``, the messages already queued
        go out first. A client that holds this up for a second is cut off."""
        self.closing = True
        try:
            async with asyncio.timeout(1.0):
                if flush and self.writer is not None:
                    await self.writer
                await self.ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()


def reply(result: RunResult) -> Event:
    """The message that ends a run: its result, or its error."""
    if result.ok:
        return {"type": "result", "output": result.output, "run_id": result.run_id}
    return {"type": "error", "message": result.error or "run failed", "run_id": result.run_id,
            "status": result.status}


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done() or task is asyncio.current_task():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


_BEARER = AUTH_SCHEMA["anyOf"][1]["properties"]["bearer"]

WS_AUTH_SCHEMA: dict[str, Any] = {
    "description": "Who may connect: none, or a bearer token in the Authorization header "
                   "or in a query parameter (default `token`, since browsers cannot set "
                   "headers on WebSocket connections).",
    "anyOf": [
        {"const": "none"},
        {"type": "object", "additionalProperties": False, "required": ["bearer"],
         "properties": {"bearer": _BEARER}},
    ],
}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/[^\\s?#]*$",
                 "description": "URL path; default /ws/<name>."},
        "mode": {"enum": ["text", "audio"], "default": "text",
                 "description": "text: each message is one run's input; audio: PCM frames "
                                "in, transcripts and speech out."},
        "auth": WS_AUTH_SCHEMA,
        "max_message": {"type": "integer", "minimum": 1, "default": 1048576,
                        "description": "Largest client message in bytes; a larger one "
                                       "closes the connection with 1009."},
        "max_connections": {"type": "integer", "minimum": 1, "default": 1024,
                            "description": "Open connections this pipeline accepts; "
                                           "further ones get 503."},
        "heartbeat": {**durations.SCHEMA, "default": "30s",
                      "description": "Ping interval; a client that does not answer is "
                                     "disconnected. 0 turns pings off."},
        "send_buffer": {"type": "integer", "minimum": 1024, "default": 1048576,
                        "description": "Bytes of replies that may wait for a slow client "
                                       "before it is disconnected."},
        "max_pending": {"type": "integer", "minimum": 1, "default": 16,
                        "description": "Messages a client may send ahead of its results."},
        "audio": {"type": "object",
                  "description": "Audio mode options (sample rate, VAD, voice), read by "
                                 "the voice engine."},
    },
}


def build(params: dict[str, Any], b: Build) -> WebSocketTrigger:
    if "auth" not in params and not b.settings.get("loopback", True):
        b.error("", "this daemon listens off loopback: give the trigger an explicit auth "
                    "(auth: none to allow anyone)")
    mode = params.get("mode", "text")
    if mode == "audio" and importlib.util.find_spec("harkd.voice") is None:
        b.error("mode", "audio mode needs harkd's voice support, which is not installed")
    if "audio" in params and mode != "audio":
        b.error("audio", "audio options need mode: audio")
    if isinstance(params.get("audio"), dict):
        check_wake(params["audio"], b.child(b.pointer + "/audio"))
    auth_raw = params.get("auth")
    if isinstance(auth_raw, dict) and "bearer" in auth_raw:
        auth_raw = {"bearer": {"query": "token", **auth_raw["bearer"]}}
    heartbeat = b.seconds("heartbeat", params.get("heartbeat", "30s"))
    return WebSocketTrigger(
        path=params.get("path", f"/ws/{b.name}"),
        mode=mode,
        auth=build_auth(auth_raw, lambda v: b.seconds("auth", v)),
        max_message=int(params.get("max_message", 1048576)),
        max_connections=int(params.get("max_connections", 1024)),
        heartbeat=heartbeat or None,
        send_buffer=int(params.get("send_buffer", 1048576)),
        max_pending=int(params.get("max_pending", 16)),
        audio=dict(params.get("audio") or {}),
    )


WEBSOCKET = TriggerKind("websocket", "A WebSocket endpoint on the daemon's listener.",
                        PARAMS, build)
