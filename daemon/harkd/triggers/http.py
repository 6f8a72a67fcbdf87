"""The ``http`` trigger: a webhook on the shared listener.

A request's body is the run's input (JSON parsed, form fields as a mapping, a WAV or
``audio/L16`` body as audio for a first ``stt`` step, anything else as text; for GET the
query). In ``sync`` mode the response is the run's output (a string as text, speech from
a final ``tts`` step as ``audio/wav``, anything else as JSON), or an SSE stream of
``delta`` events then a ``result`` when the client sends ``Accept: text/event-stream``.
In ``async`` mode the answer is 202 with the run id at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..auth import AUTH_SCHEMA, Auth, Unauthorized, build_auth
from ..core.bound import Bound
from ..core.registry import TriggerKind
from ..core.run import Event, RunResult
from ..records import dataclass
from ..values import jsonable, orjson_module

if TYPE_CHECKING:
    from aiohttp import web

    from ..core.pipeline import Build

HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
TEXT_PLAIN = "text/plain; charset=utf-8"


@functools.cache
def _web() -> Any:
    """aiohttp's ``web``, imported when first needed (``harkd check`` builds webhooks
    without it). Every response needs it: a cached call is 60 ns, the import statement 300."""
    from aiohttp import web

    return web


def error_response(status: int, message: str, run_id: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The one error shape of harkd's HTTP surface."""
    from aiohttp import web

    body: dict[str, Any] = {"message": message}
    if run_id:
        body["run_id"] = run_id
    return web.json_response({"error": body}, status=status, headers=headers)


def result_response(result: RunResult) -> web.Response:
    headers = {"X-Harkd-Run-Id": result.run_id}
    if not result.ok:
        if result.retry_after is not None:
            headers["Retry-After"] = str(result.retry_after)
        return error_response(result.http_status, result.error or "run failed",
                              result.run_id, headers)
    response: type[web.Response] = _web().Response
    if isinstance(result.output, str):
        # The header as aiohttp would build it from content_type and charset, without
        # parsing it back per response.
        headers["Content-Type"] = TEXT_PLAIN
        return response(body=result.output.encode(), headers=headers)
    if isinstance(result.output, bytes | bytearray):
        return response(body=bytes(result.output), headers=headers,
                        content_type="application/octet-stream")
    to_wav = getattr(result.output, "to_wav", None)
    if callable(to_wav):
        # Speech is a value: a pipeline that ends in tts answers with the audio itself.
        return response(body=to_wav(), headers=headers, content_type="audio/wav")
    # (what web.json_response does)
    return response(text=_dumps(result.output), headers=headers,
                    content_type="application/json")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=jsonable)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with 413."""
    length = request.content_length
    if length is not None and length <= limit:
        if not request.body_exists:
            return b""
        # The common case: a known length within the limit, read in one go (aiohttp's
        # web, for the errors, is imported only off this path: 1 us a request).
        content = request.content
        try:
            if not content.is_eof():
                return await content.readexactly(length)
            # All of it has arrived (a small body comes with its headers): taken from the
            # buffer without readexactly's two coroutines (1.1 -> 0.6 us).
            got = content.read_nowait(length)
            if len(got) < length:
                raise asyncio.IncompleteReadError(got, length)
            return got
        except asyncio.IncompleteReadError:
            from aiohttp import web

            raise web.HTTPBadRequest(text="body is shorter than its Content-Length") from None
    from aiohttp import web

    if length is not None:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


def parse_body(request: web.Request, body: bytes) -> Any:
    """Decode a body by its content type; raises ValueError with a message."""
    if request.method in ("GET", "HEAD", "DELETE") and not body:
        return dict(request.query)
    if not body:
        return None
    if _utf8_json(request) and not _LONG_NUMBER.search(body):
        # orjson takes a webhook's JSON in a fifth of json.loads' time (1.4 -> 0.3 us).
        # What it refuses (NaN, 1e400, lone surrogates, bad JSON) takes the path below,
        # and so does a body with an integer that may pass 64 bits, which orjson would
        # turn into a float.
        try:
            return orjson_module().loads(body)
        except ValueError:
            pass
    ctype = request.content_type
    if ctype in AUDIO_TYPES:
        return parse_audio(request.headers.get("Content-Type", ""), body)
    text = body.decode(request.charset or "utf-8", errors="strict")
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
    if ctype == "application/x-www-form-urlencoded":
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return text


#: the charsets the orjson path takes (UTF-8 is JSON's own)
_UTF8 = frozenset({None, "utf-8", "UTF-8", "utf8"})
#: 19 digits in a row: an integer that may not fit in 64 bits
_LONG_NUMBER = re.compile(rb"\d{19}")


def _utf8_json(request: web.Request) -> bool:
    """Whether the body is JSON in UTF-8 (a bare ``application/json`` at a glance, without
    parsing the header)."""
    raw = request.headers.get("Content-Type")
    if raw == "application/json":
        return True
    return (raw is not None and raw.startswith("application/json")
            and request.content_type == "application/json" and request.charset in _UTF8)


AUDIO_TYPES = frozenset({"audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave",
                         "audio/l16"})


def parse_audio(content_type: str, body: bytes) -> Any:
    """A WAV body, or raw PCM sent as ``audio/L16; rate=16000`` (little-endian unless
    ``endianness=big-endian``; ``channels=N``), as audio in harkd's internal format for a
    first ``stt`` step. Raises ValueError with a message for the client."""
    from aiohttp.helpers import parse_mimetype

    mime = parse_mimetype(content_type)
    try:
        from ..voice.frames import Audio, convert, read_wav
    except ImportError:
        raise ValueError("audio bodies need harkd's voice support: pip install "
                         "'harkd[voice]'") from None
    if mime.subtype.lower() != "l16":
        import io
        import wave

        try:
            return read_wav(io.BytesIO(body))
        except (wave.Error, EOFError, ValueError) as exc:
            raise ValueError(f"body is not a readable WAV file: {exc}") from None
    params = {k.lower(): v for k, v in mime.parameters.items()}
    try:
        rate = int(params.get("rate", "16000"))
        channels = int(params.get("channels", "1"))
    except ValueError:
        raise ValueError("audio/L16 needs a numeric rate (and channels)") from None
    if not 8000 <= rate <= 96000 or not 1 <= channels <= 8:
        raise ValueError("audio/L16 rate must be 8000..96000 and channels 1..8")
    if params.get("endianness", "little-endian").lower() == "big-endian":
        swapped = bytearray(body[: len(body) - len(body) % 2])
        swapped[0::2], swapped[1::2] = swapped[1::2], swapped[0::2]
        body = bytes(swapped)
    return Audio(convert(body, rate, channels))


def trigger_data(request: web.Request, kind: str = "http") -> dict[str, Any]:
    headers = request.headers
    # (the lookups are case-insensitive; most requests carry none of these)
    if "Authorization" in headers or "Cookie" in headers or "Proxy-Authorization" in headers:
        shown = {k: v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS}
    else:
        shown = dict(headers.items())
    return {
        "kind": kind,
        "method": request.method,
        "path": request.path,
        "query": dict(request.query) if request.query_string else {},
        "headers": shown,
        "remote": request.remote,
    }


@dataclass(frozen=True, eq=False)
class HttpTrigger:
    """A compiled webhook."""

    path: str
    methods: tuple[str, ...]
    response: str
    auth: Auth
    max_body: int
    kind: str = "http"

    @property
    def routes(self) -> tuple[str, ...]:
        return (self.path,)

    def describe(self) -> dict[str, Any]:
        return {"kind": "http", "path": self.path, "methods": list(self.methods),
                "response": self.response, "auth": self.auth.describe()}

    route_only = True  # serve() only reports started (not a dataclass field)

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        started()

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse:
        if request.method not in self.methods:
            allowed = ", ".join(self.methods)
            return error_response(405, f"method {request.method} is not allowed here; use "
                                  f"{allowed}", headers={"Allow": ",".join(self.methods)})
        try:
            body = await read_body(request, self.max_body)
        except _web().HTTPRequestEntityTooLarge:  # (evaluated only when something is raised)
            return error_response(413, f"body is larger than {self.max_body:,} bytes")
        try:
            self.auth.check(request.headers, request.query, body)
        except Unauthorized as exc:
            return error_response(401, str(exc),
                                  headers={"WWW-Authenticate": "Bearer"}
                                  if self.auth.kind == "bearer" else None)
        try:
            data = parse_body(request, body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error_response(400, str(exc))

        trigger = trigger_data(request)
        if self.response == "async":
            from aiohttp import web

            run = bound.new_run(data, trigger)
            bound.services.spawn(bound.run(run))
            return web.json_response({"run_id": run.id, "status": "accepted"}, status=202,
                                     headers={"X-Harkd-Run-Id": run.id,
                                              "Location": f"/api/runs/{run.id}"})
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await stream_sse(request, bound, data, trigger)
        result = await bound.run(bound.new_run(data, trigger))
        return result_response(result)


async def stream_sse(request: web.Request, bound: Bound, data: Any,
                     trigger: dict[str, Any]) -> web.StreamResponse:
    """Run with deltas sent as server-sent events, then the result or error event."""
    from aiohttp import web

    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    run_holder: dict[str, str] = {}

    async def emit(event: Event) -> None:
        if event.get("type") != "delta":
            return
        if not response.prepared:
            response.headers["X-Harkd-Run-Id"] = run_holder["id"]
            await response.prepare(request)
        await response.write(b"data: " + _dumps(event).encode() + b"\n\n")

    run = bound.new_run(data, trigger, emit, streaming=True)
    run_holder["id"] = run.id
    result = await bound.run(run)
    if not response.prepared:
        if not result.ok:
            return result_response(result)
        response.headers["X-Harkd-Run-Id"] = run.id
        await response.prepare(request)
    final: dict[str, Any] = (
        {"type": "result", "output": result.output, "run_id": run.id} if result.ok
        else {"type": "error", "message": result.error, "run_id": run.id}
    )
    await response.write(b"data: " + _dumps(final).encode() + b"\n\n")
    await response.write_eof()
    return response


PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/[^\\s?#]*$",
                 "description": "URL path; default /hooks/<name>."},
        "methods": {"type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                    "default": ["POST"]},
        "response": {"enum": ["sync", "async"], "default": "sync",
                     "description": "sync: answer with the run's output; async: 202 at once."},
        "auth": AUTH_SCHEMA,
        "max_body": {"type": "integer", "minimum": 1,
                     "description": "Largest body in bytes (default: server.max_body)."},
    },
}


def build(params: dict[str, Any], b: Build) -> HttpTrigger:
    if "auth" not in params and not b.settings.get("loopback", True):
        b.error("", "this daemon listens off loopback: give the trigger an explicit auth "
                    "(auth: none to allow anyone)")
    return HttpTrigger(
        path=params.get("path", f"/hooks/{b.name}"),
        methods=tuple(params.get("methods", ["POST"])),
        response=params.get("response", "sync"),
        auth=build_auth(params.get("auth"), lambda v: b.seconds("auth", v)),
        max_body=int(params.get("max_body", b.settings.get("max_body", 1024 * 1024))),
    )


HTTP = TriggerKind("http", "A webhook on the daemon's listener.", PARAMS, build)
