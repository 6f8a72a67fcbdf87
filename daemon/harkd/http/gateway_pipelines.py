"""Pipelines as models on the ``/v1`` gateway: ``pipeline/NAME``.

A pipeline that opts in (``gateway: true``, or an ``mcp:`` block) is listed by
``GET /v1/models`` and answers ``POST /v1/chat/completions`` with ``model:
pipeline/NAME``, so any OpenAI client (or Home Assistant's OpenAI integration) can run it.
The run's input is the text of the last user message; the whole conversation is in
``trigger.messages``. Its output is the answer: text as it is, anything else as JSON.
With ``stream: true`` the chunks a streaming step emits (an ``llm`` step with ``stream:
true``) go out as they come; a pipeline that streams nothing sends its output as one chunk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from ..core.bound import Bound
    from ..core.run import Event, RunResult
    from .host import Host

PREFIX = "pipeline/"


def offered(daemon: Host) -> list[str]:
    """The model names of the serving pipelines that opted in."""
    return sorted(PREFIX + e.name for e in daemon.catalog.entries.values()
                  if e.bound is not None and _opted_in(e.bound))


def _opted_in(bound: Bound) -> bool:
    return bound.pipeline.gateway or bound.pipeline.mcp is not None


def find(daemon: Host, model: str) -> Bound | None:
    """The pipeline a ``pipeline/NAME`` model stands for, if it serves and opted in."""
    bound = daemon.catalog.bound(model.removeprefix(PREFIX))
    return bound if bound is not None and _opted_in(bound) else None


def last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                return "".join(str(p.get("text", "")) for p in content
                               if isinstance(p, Mapping) and p.get("type") == "text")
            return "" if content is None else str(content)
    return ""


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output
    text = getattr(output, "text", None)
    if isinstance(text, str):
        return text
    return json.dumps(output, ensure_ascii=False, default=str)


async def chat(daemon: Host, request: web.Request, bound: Bound, model: str,
               body: Mapping[str, Any]) -> web.StreamResponse:
    """Answer one chat completion by running ``bound``."""
    from ..core.run import new_run_id
    from .openai_errors import openai_error

    messages = list(body.get("messages") or ())
    trigger = {"kind": "gateway", "model": model, "messages": messages}
    data = last_user_text(messages)
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    if not body.get("stream"):
        result = await bound.run(bound.new_run(data, trigger))
        if not result.ok:
            return _error(result, openai_error)
        text = _text(result.output)
        return web.json_response({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}},
            headers={"X-Harkd-Run-Id": result.run_id})

    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    streamed = False

    def chunk(delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        doc = {"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": model, "choices": [{"index": 0, "delta": dict(delta),
                                            "finish_reason": finish}]}
        return b"data: " + json.dumps(doc, ensure_ascii=False).encode() + b"\n\n"

    async def start(run_id: str) -> None:
        response.headers["X-Harkd-Run-Id"] = run_id
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": ""}))

    run_id = new_run_id()

    async def emit(event: Event) -> None:
        nonlocal streamed
        if event.get("type") != "delta" or not event.get("text"):
            return
        if not response.prepared:
            await start(run_id)
        streamed = True
        await response.write(chunk({"content": str(event["text"])}))

    run = bound.new_run(data, trigger, emit, streaming=True, run_id=run_id)
    result = await bound.run(run)
    if not response.prepared:
        if not result.ok:
            return _error(result, openai_error)
        await start(run.id)
    if not result.ok:
        error = {"error": {"message": result.error, "type": "server_error"}}
        await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
    else:
        if not streamed:
            await response.write(chunk({"content": _text(result.output)}))
        await response.write(chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _error(result: RunResult, openai_error: Any) -> web.Response:
    status = result.http_status if result.http_status >= 400 else 500
    response: web.Response = openai_error(status, f"pipeline run {result.run_id} failed: "
                                          f"{result.error}", "server_error")
    return response
