"""The worker's OpenAI-compatible HTTP interface around one :class:`Generator`.

``POST /v1/chat/completions`` (messages rendered as a few-shot transcript),
``POST /v1/completions`` (a raw prompt), both with ``stream: true`` as SSE;
``GET /v1/models`` and ``GET /health`` (which also tells the supervisor how long the
current generation has been running, so it can spot a hang).
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import aclosing
from typing import Any, TypedDict

from aiohttp import web

from . import prompt as transcript
from .generate import Generator, Job, Piece, PromptTooLong, Sampling

GENERATOR = web.AppKey("generator", Generator)
NAME = web.AppKey("name", str)


class Usage(TypedDict):
    """Token counts of one answer (OpenAI ``usage``)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class BadRequest(ValueError):
    """A request body that cannot be served; answered with 400."""


def _error(status: int, message: str, kind: str = "invalid_request_error",
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                             status=status, headers=headers)


def _sampling(body: dict[str, Any], n_ctx: int, stop: tuple[str, ...]) -> Sampling:
    try:
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        temperature = float(body.get("temperature", Sampling.temperature) or 0.0)
        top_p = float(body.get("top_p", Sampling.top_p) or Sampling.top_p)
        seed = int(body.get("seed", Sampling.seed) or 0)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad sampling parameter: {exc}") from exc
    extra = body.get("stop") or ()
    if isinstance(extra, str):
        extra = (extra,)
    if not isinstance(extra, list | tuple) or not all(isinstance(s, str) for s in extra):
        raise BadRequest("stop must be a string or a list of strings")
    return Sampling(max_tokens=max(1, min(max_tokens, n_ctx // 2)),
                    temperature=max(0.0, temperature), top_p=top_p, seed=seed,
                    stop=(*stop, *extra))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _chat_prompt(gen: Generator, messages: Any, max_tokens: int) -> tuple[str, int]:
    """The transcript of ``messages``, dropping the oldest turns until it fits."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) for m in messages):
        raise BadRequest("messages must be a non-empty list of objects")
    keep: int | None = None
    while True:
        text = transcript.render_chat(messages, keep_last=keep)
        try:
            return text, gen.check(text, max_tokens)
        except PromptTooLong as exc:
            turns = len(transcript.split_system(messages)[1]) if keep is None else keep
            if turns <= 1:
                raise BadRequest(str(exc)) from exc
            keep = turns - 1


def _closing(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class _Reply:
    """Builds one answer's OpenAI objects; ``chat`` picks the chat or completion shape."""

    def __init__(self, name: str, chat: bool) -> None:
        self.name = name
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._started = False

    def _envelope(self, choices: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind + (".chunk" if stream and self.chat else ""),
                "created": self.created, "model": self.name, "choices": choices}

    def chunk(self, piece: Piece) -> dict[str, Any]:
        text = piece.text
        if self.chat and not self._started:
            text = text.lstrip()
        self._started = self._started or bool(text)
        finish = piece.finish_reason
        if self.chat:
            delta: dict[str, Any] = {"content": text} if text else {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return self._envelope([choice], stream=True)

    def first(self) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""}
        return self._envelope([{"index": 0, "delta": delta, "finish_reason": None}], True)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {**self._envelope([], stream=True), "usage": usage}

    def whole(self, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "message": {
                "role": "assistant", "content": text.strip()}}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._envelope([choice], stream=False), "usage": usage}


def _usage(job: Job) -> Usage:
    return Usage(prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
                 total_tokens=job.prompt_tokens + job.completion_tokens)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _serve(request: web.Request, *, chat: bool) -> web.StreamResponse:
    gen = request.app[GENERATOR]
    if gen.waiting >= gen.max_queue:
        return _error(503, "the local model is busy", "server_busy", {"Retry-After": "1"})
    try:
        body = await _body(request)
        if chat:
            sampling = _sampling(body, gen.n_ctx, transcript.STOP)
            text, tokens = _chat_prompt(gen, body.get("messages"), sampling.max_tokens)
        else:
            sampling = _sampling(body, gen.n_ctx, ())
            raw = body.get("prompt")
            if isinstance(raw, list) and len(raw) == 1:
                raw = raw[0]
            if not isinstance(raw, str):
                raise BadRequest("prompt must be a string")
            text = raw
            try:
                tokens = gen.check(text, sampling.max_tokens)
            except PromptTooLong as exc:
                raise BadRequest(str(exc)) from exc
    except BadRequest as exc:
        return _error(400, str(exc))
    job = Job(text, sampling, prompt_tokens=tokens)
    reply = _Reply(request.app[NAME], chat)
    if body.get("stream"):
        return await _stream(request, gen, job, reply, body)
    parts: list[str] = []
    finish = "stop"
    async with aclosing(gen.stream(job)) as pieces:
        async for piece in pieces:
            if _closing(request):
                job.cancel()
            parts.append(piece.text)
            finish = piece.finish_reason or finish
    return web.json_response(reply.whole("".join(parts), finish, _usage(job)))


async def _stream(request: web.Request, gen: Generator, job: Job, reply: _Reply,
                  body: dict[str, Any]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    try:
        if reply.chat:
            await resp.write(_sse(reply.first()))
        async with aclosing(gen.stream(job)) as pieces:
            async for piece in pieces:
                if _closing(request):
                    job.cancel()
                    continue
                chunk = reply.chunk(piece)
                if chunk["choices"][0].get("delta", True) or piece.finish_reason:
                    await resp.write(_sse(chunk))
        if include_usage:
            await resp.write(_sse(reply.usage_chunk(_usage(job))))
        await resp.write(_sse("[DONE]"))
        await resp.write_eof()
    except ConnectionResetError:
        job.cancel()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, chat=False)


async def models(request: web.Request) -> web.Response:
    name = request.app[NAME]
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "harkd"}]})


async def health(request: web.Request) -> web.Response:
    gen = request.app[GENERATOR]
    return web.json_response({"status": "ok", "model": request.app[NAME],
                              "busy_s": round(gen.busy_for, 3), "waiting": gen.waiting,
                              "finished": gen.finished, "cancelled": gen.cancelled})


def build_app(gen: Generator, name: str) -> web.Application:
    """The worker's aiohttp application."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[GENERATOR] = gen
    app[NAME] = name
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app
