"""The router as an OpenAI-compatible gateway: ``POST /v1/chat/completions`` (plain and
SSE-streamed, with tools) and ``GET /v1/models``, whose model names are the aliases (and
``pipeline/NAME`` for pipelines that opt in: :mod:`harkd.http.gateway_pipelines`).

Any OpenAI client pointed at ``http://HOST:PORT/v1`` gets harkd's fallbacks, retries and
pooled backends. Tool calls are passed back to the client to run, as OpenAI does. The
bearer-token middleware of :mod:`harkd.http.api` protects ``/v1`` when ``server.token`` is set.
A request may send ``X-Harkd-Allow-Cloud: false`` to keep to local deployments.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import HarkError
from ..logs import get_logger
from ..secrets import REDACTOR
from ..triggers.http import read_body
from ..values import json_bytes, json_loads
from . import gateway_pipelines
from .openai_errors import openai_error

if TYPE_CHECKING:
    from ..router import ChatRequest, ChatResponse, Router
    from .host import Host

log = get_logger("harkd.gateway")

#: completion ids: a random part per process, then a counter (uuid4 per answer cost the
#: gateway as much as its metrics do)
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def completion_id() -> str:
    """``chatcmpl-`` and 24 hex digits, unique across restarts (the prefix is new each time)."""
    return f"chatcmpl-{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


JSON_TYPE = "application/json; charset=utf-8"

PASSTHROUGH = ("top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
               "user", "n", "logprobs", "top_logprobs")


def setup(app: web.Application, daemon: Host) -> None:
    """Add the ``/v1`` routes to the daemon's app."""
    gateway = Gateway(daemon)
    app.router.add_post("/v1/chat/completions", gateway.chat)
    app.router.add_get("/v1/models", gateway.models)
    app.router.add_get("/v1/models/{model}", gateway.model)
    from . import gateway_audio  # OpenAI's audio endpoints; no heavy imports until used

    gateway_audio.setup(app, daemon)


class Gateway:
    """Handlers of the gateway; the router is looked up per request (reloads swap it)."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon

    @property
    def router(self) -> Router:
        return self.daemon.services.router

    async def models(self, request: web.Request) -> web.Response:
        data = [_model(alias) for alias in self.router.aliases()]
        data += [_model(name) for name in gateway_pipelines.offered(self.daemon)]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        alias = request.match_info["model"]
        if alias.startswith(gateway_pipelines.PREFIX) and \
                gateway_pipelines.find(self.daemon, alias) is not None:
            return web.json_response(_model(alias))
        if alias not in self.router.aliases():
            from ..router import UnknownAlias

            return _failure(UnknownAlias(alias, self.router.aliases()))
        return web.json_response(_model(alias))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await read_body(request, self.daemon.settings.max_body)
            body = json_loads(raw)
        except web.HTTPRequestEntityTooLarge:
            return openai_error(413, "request body is too large")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return openai_error(400, f"body is not valid JSON: {exc}")
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model.startswith(gateway_pipelines.PREFIX):
            bound = gateway_pipelines.find(self.daemon, model)
            if bound is None:
                return openai_error(404, f"no pipeline serves model {model!r} (pipelines "
                                    "opt in with gateway: true or an mcp: block)",
                                    code="model_not_found")
            return await gateway_pipelines.chat(self.daemon, request, bound, model, body)
        try:
            req = _request(body, request.headers)
        except ValueError as exc:
            return openai_error(400, str(exc))
        try:
            if body.get("stream"):
                return await self._stream(request, req, body)
            resp = await self.router.complete(req)
        except HarkError as exc:
            return _failure(exc)
        # The answer's bytes and headers are made here, not by json_response (which
        # encodes through json.dumps, then the text again).
        return web.Response(body=json_bytes(_completion(resp)), headers={
            "Content-Type": JSON_TYPE, "X-Harkd-Deployment": resp.deployment,
            "X-Harkd-Fallbacks": str(resp.fallbacks)})

    async def _stream(self, request: web.Request, req: ChatRequest,
                      body: Mapping[str, Any]) -> web.StreamResponse:
        stream = self.router.stream(req)
        cid = completion_id()
        created = int(time.time())
        try:
            first: str | None = await anext(stream, None)
        except HarkError as exc:
            await stream.aclose()
            return _failure(exc)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)

        async def send(doc: Mapping[str, Any]) -> None:
            await response.write(b"data: %s\n\n" % json_bytes(doc))

        def chunk(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
            return chunk_document(cid, created, req.model, delta, finish)

        text_chunk = text_chunks(cid, created, req.model)
        try:
            await send(chunk({"role": "assistant", "content": ""}))
            if first:
                await response.write(text_chunk(first))
            async for text in stream:
                await response.write(text_chunk(text))
        except HarkError as exc:
            log.warning("gateway_stream_failed", model=req.model, error=str(exc))
            await send({"error": {"message": REDACTOR(str(exc)), "type": "server_error"}})
            await response.write_eof()
            return response
        except ConnectionResetError:
            log.info("gateway_client_gone", model=req.model)
            return response
        finally:
            await stream.aclose()
        resp = stream.response
        finish = "stop"
        if resp is not None and resp.tool_calls:
            calls = [{"index": i, **c.as_message()} for i, c in enumerate(resp.tool_calls)]
            await send(chunk({"tool_calls": calls}))
            finish = "tool_calls"
        elif resp is not None and resp.finish_reason:
            finish = resp.finish_reason
        await send(chunk({}, finish))
        options = body.get("stream_options")
        if resp is not None and isinstance(options, dict) and options.get("include_usage"):
            await send({"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": req.model, "choices": [], "usage": _usage(resp)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def chunk_document(cid: str, created: int, model: str, delta: Mapping[str, Any],
                   finish: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [{"index": 0, "delta": dict(delta),
                                         "finish_reason": finish}]}


def text_chunks(cid: str, created: int, model: str) -> Callable[[str], bytes]:
    """The SSE event of a stream's text chunk, given its text: the event of an empty
    text, encoded once and cut where its text goes (building and encoding the document
    cost 2k instructions a chunk). The cut is the last ``"content":""``, which only the
    delta's own key and value can spell: inside a JSON string every quote is escaped."""
    empty = b"data: %s\n\n" % json_bytes(chunk_document(cid, created, model, {"content": ""}))
    before, _, after = empty.rpartition(b'"content":""')
    before += b'"content":'
    return lambda text: before + json_bytes(text) + after


def _request(body: Any, headers: Mapping[str, str]) -> ChatRequest:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise ValueError("model is required (one of harkd's model aliases)")
    if not isinstance(messages, list) or not messages:
        raise ValueError(_MESSAGES)
    for m in messages:  # a loop, not all() over a generator: a frame less per call
        if type(m) is not dict or "role" not in m:
            raise ValueError(_MESSAGES)
    params: dict[str, Any] = {}
    schema = None
    stop: Any = ()
    tools: Any = ()
    max_tokens = None
    # Most requests carry only model and messages (and stream): skip the optional fields.
    if not _PLAIN.issuperset(body):
        params = {k: body[k] for k in PASSTHROUGH if k in body}
        stop = body.get("stop") or ()
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        elif fmt is not None:
            params["response_format"] = fmt
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        tools = body.get("tools") or ()
        if not isinstance(tools, list | tuple):
            raise ValueError("tools must be a list")
    cloud = headers.get("X-Harkd-Allow-Cloud")
    return _chat_request()(
        model=model, messages=tuple(messages), temperature=body.get("temperature"),
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        stop=(stop,) if isinstance(stop, str) else tuple(stop), tools=tuple(tools),
        tool_choice=body.get("tool_choice"), json_schema=schema,
        allow_cloud=cloud is None or cloud.lower() not in ("false", "0"),
        params=params, origin=_ORIGIN)


_MESSAGES = "messages must be a non-empty list of {role, content} objects"
#: the fields :func:`_request` reads without looking further
_PLAIN = frozenset({"model", "messages", "stream", "temperature", "tool_choice"})
_ORIGIN: Mapping[str, Any] = MappingProxyType({"gateway": True})


@functools.cache
def _chat_request() -> type[ChatRequest]:
    """ChatRequest, imported with the first call (the router loads then, not at start);
    an import statement per call cost a microsecond."""
    from ..router import ChatRequest

    return ChatRequest


def _model(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "harkd"}


def _usage(resp: ChatResponse) -> dict[str, int]:
    u = resp.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def _completion(resp: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": resp.text}
    finish = resp.finish_reason or "stop"
    if resp.tool_calls:
        message["tool_calls"] = [c.as_message() for c in resp.tool_calls]
        message["content"] = resp.text or None
        finish = "tool_calls"
    return {"id": completion_id(), "object": "chat.completion",
            "created": int(time.time()), "model": resp.alias,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(resp)}


def _failure(exc: HarkError) -> web.Response:
    from ..router import NoDeployment, UnknownAlias

    if isinstance(exc, UnknownAlias):
        return openai_error(404, str(exc), code="model_not_found")
    if isinstance(exc, NoDeployment):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} \
            if exc.retry_after is not None else None
        kind = "rate_limit_error" if exc.status == 429 else "server_error"
        return openai_error(exc.status, str(exc), kind, headers=headers)
    status = getattr(exc, "status", 502)
    return openai_error(status if isinstance(status, int) else 502, str(exc), "server_error")
