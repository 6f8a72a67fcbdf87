"""A scripted OpenAI-compatible (and Ollama) upstream on loopback, for tests and benches.

It does what a real server will not do on demand: answer 500 or 429 with ``Retry-After``,
hang, send its first token late, break off mid-stream, or ask for a tool call. By default
it answers ``echo: <last user message>`` (``tool said: <content>`` after a tool result).
Script the next answers of one model with :meth:`ScriptedUpstream.plan`::

    async with ScriptedUpstream() as up:
        up.plan("m1", Reply(status=500), Reply(text="fine"))
        ...  # point a deployment at api_base=up.v1, model=openai/m1
        assert up.calls("m1") == 2
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from aiohttp import web

from .records import dataclass
from .testing import free_port

__all__ = ["Reply", "ScriptedUpstream"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``text=None`` echoes the last message.

    ``delay`` is before the response starts; ``first_token_delay`` is after a stream's
    headers and role chunk, before its first token; ``hang`` never answers;
    ``break_after`` closes a stream after that many content chunks.
    """

    status: int = 200
    text: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0
    hang: bool = False
    break_after: int | None = None
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    usage: bool = True


@dataclass
class Seen:
    """A request the upstream received."""

    path: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


class ScriptedUpstream:
    """An aiohttp server on a free loopback port; see the module docstring."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.v1 = self.base + "/v1"
        self.requests: list[Seen] = []
        self.inflight: collections.Counter[str] = collections.Counter()
        self.max_inflight: collections.Counter[str] = collections.Counter()
        self._plans: dict[str, collections.deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.record = True
        self._generation = 0

    def plan(self, model: str, *replies: Reply) -> None:
        """Queue the next answers for ``model``; after them it answers its default."""
        self._plans.setdefault(model, collections.deque()).extend(replies)

    def default(self, model: str, reply: Reply) -> None:
        self._defaults[model] = reply

    def calls(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r.model == model)

    def last(self, model: str | None = None) -> Seen:
        return [r for r in self.requests if model is None or r.model == model][-1]

    def reset(self) -> None:
        self.requests.clear()
        self._plans.clear()
        self._defaults.clear()
        self.max_inflight.clear()
        # Handlers of earlier tests may still be sleeping; they must not count any more.
        self.inflight.clear()
        self._generation += 1

    async def __aenter__(self) -> ScriptedUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _routes(self, app: web.Application) -> None:
        """The endpoints this upstream answers (the cloud dialects add theirs)."""
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/api/chat", self._ollama)
        app.router.add_get("/v1/models", self._models)

    # -- handlers ---------------------------------------------------------------------

    def _next(self, model: str) -> Reply:
        queue = self._plans.get(model)
        if queue:
            return queue.popleft()
        return self._defaults.get(model) or _DEFAULT

    async def _begin(self, request: web.Request, path: str
                     ) -> tuple[dict[str, Any], str, Reply]:
        body = json.loads(await request.read())
        model = str(body.get("model", ""))
        return body, model, await self._script(request, path, model, body)

    async def _script(self, request: web.Request, path: str, model: str,
                      body: dict[str, Any]) -> Reply:
        """Record the request and take the model's next reply, waiting as it says."""
        if self.record:
            self.requests.append(Seen(path, model, body, dict(request.headers),
                                      query=dict(request.query)))
        reply = self._next(model)
        if reply.hang:
            await self._stop.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, model, reply = await self._begin(request, "openai")
        generation = self._generation
        self.inflight[model] += 1
        self.max_inflight[model] = max(self.max_inflight[model], self.inflight[model])
        try:
            if reply.status >= 400:
                return _error(reply)
            text = _answer(body, reply)
            if body.get("stream"):
                return await self._openai_stream(request, model, text, reply)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reply.tool_calls:
                message = {"role": "assistant", "content": None,
                           "tool_calls": _calls(reply)}
            doc: dict[str, Any] = {
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
                "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if reply.tool_calls else "stop"}]}
            if reply.usage:
                doc["usage"] = {"prompt_tokens": 7, "completion_tokens": len(text.split()),
                                "total_tokens": 7 + len(text.split())}
            return web.json_response(doc)
        finally:
            if generation == self._generation:
                self.inflight[model] -= 1

    async def _openai_stream(self, request: web.Request, model: str, text: str,
                             reply: Reply) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None,
                       **extra: Any) -> None:
            doc = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                   "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")

        await send({"role": "assistant", "content": ""})
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        if reply.tool_calls:
            for i, call in enumerate(_calls(reply)):
                await send({"tool_calls": [{"index": i, **call}]})
            await send({}, "tool_calls")
        else:
            for i, word in enumerate(_chunks(text)):
                if reply.break_after is not None and i >= reply.break_after:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await send({"content": word})
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            await send({}, "stop")
        if reply.usage:
            n = len(text.split())
            usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
            doc = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                   "created": 0, "model": model, "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body, model, reply = await self._begin(request, "ollama")
        if reply.status >= 400:
            return _error(reply)
        text = _answer(body, reply)
        calls = [{"function": {"name": n, "arguments": dict(a)}} for n, a in reply.tool_calls]
        if not body.get("stream", True):
            return web.json_response({
                "model": model, "done": True, "done_reason": "stop",
                "message": {"role": "assistant", "content": "" if calls else text,
                            **({"tool_calls": calls} if calls else {})},
                "prompt_eval_count": 7, "eval_count": len(text.split())})
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        for word in _chunks(text):
            await resp.write(json.dumps({"model": model, "done": False, "message": {
                "role": "assistant", "content": word}}).encode() + b"\n")
        await resp.write(json.dumps({"model": model, "done": True, "done_reason": "stop",
                                     "message": {"role": "assistant", "content": ""},
                                     "prompt_eval_count": 7,
                                     "eval_count": len(text.split())}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})


_DEFAULT = Reply()


def _answer(body: dict[str, Any], reply: Reply) -> str:
    if reply.text is not None:
        return reply.text
    messages = body.get("messages") or [{}]
    last = messages[-1]
    content = last.get("content")
    if not isinstance(content, str):
        content = json.dumps(content)
    return f"tool said: {content}" if last.get("role") == "tool" else f"echo: {content}"


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _calls(reply: Reply) -> list[dict[str, Any]]:
    return [{"id": f"call_{i}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(dict(args))}}
            for i, (name, args) in enumerate(reply.tool_calls)]


def _error(reply: Reply) -> web.Response:
    headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
    return web.json_response({"error": {"message": f"scripted failure {reply.status}",
                                        "type": "scripted"}},
                             status=reply.status, headers=headers)


async def _serve(port: int) -> None:
    up = ScriptedUpstream()
    up.port, up.base, up.v1 = port, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1"
    up.record = False
    async with up:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # python -m harkd.testing_upstream PORT (for benches)
    import sys

    asyncio.run(_serve(int(sys.argv[1])))
