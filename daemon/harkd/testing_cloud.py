"""Scripted upstreams that speak Anthropic's Messages API and Google's Gemini API.

They let tests drive real ``litellm`` (``anthropic/...`` and ``gemini/...`` deployments
with ``api_base`` pointed here) through answers, streams, tool calls and the failures a
real provider will not produce on demand. They are scripted like
:class:`~harkd.testing_upstream.ScriptedUpstream` (same :class:`Reply`, ``plan``,
``calls``), and answer ``echo: <last user text>`` (``tool said: <result>``) by default::

    async with ScriptedAnthropic() as up:
        up.plan("claude-x", Reply(status=429, retry_after="0"), Reply(text="fine"))
        ...  # models: {a: [{model: anthropic/claude-x, api_base: up.base, api_key: k}]}

Only the parts of each API that LiteLLM uses are spoken, in the documented shapes:
``POST /v1/messages`` (JSON or SSE events) and ``POST /v1beta/models/M:generateContent``
or ``:streamGenerateContent?alt=sse``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .testing_upstream import Reply, ScriptedUpstream, _chunks

__all__ = ["Reply", "ScriptedAnthropic", "ScriptedGemini"]

_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error",
                     429: "rate_limit_error", 529: "overloaded_error"}
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def _error(reply: Reply, doc: dict[str, Any]) -> web.Response:
    headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
    return web.json_response(doc, status=reply.status, headers=headers)


def _message(reply: Reply) -> str:
    """An error's message: the reply's text (so a test can echo a key) or a fixed one."""
    return reply.text if reply.text is not None else f"scripted failure {reply.status}"


class ScriptedAnthropic(ScriptedUpstream):
    """Anthropic's ``POST /v1/messages`` on a free loopback port (``base`` is the
    deployment's ``api_base``). Requests are recorded with path ``anthropic``."""

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, model, reply = await self._begin(request, "anthropic")
        if reply.status >= 400:
            kind = _ANTHROPIC_ERRORS.get(reply.status, "api_error")
            return _error(reply, {"type": "error",
                                  "error": {"type": kind, "message": _message(reply)}})
        text = reply.text if reply.text is not None else _anthropic_answer(body)
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": dict(args)}
            for i, (name, args) in enumerate(reply.tool_calls)] or [
            {"type": "text", "text": text}]
        stop = "tool_use" if reply.tool_calls else "end_turn"
        out_tokens = len(text.split())
        if not body.get("stream"):
            return web.json_response({
                "id": "msg_scripted", "type": "message", "role": "assistant",
                "model": model, "content": blocks, "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": 7, "output_tokens": out_tokens}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(kind: str, **data: Any) -> None:
            doc = json.dumps({"type": kind, **data})
            await resp.write(f"event: {kind}\ndata: {doc}\n\n".encode())

        await event("message_start", message={
            "id": "msg_scripted", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 1}})
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        for i, block in enumerate(blocks):
            if block["type"] == "tool_use":
                await event("content_block_start", index=i, content_block={
                    **block, "input": {}})
                await event("content_block_delta", index=i, delta={
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])})
            else:
                await event("content_block_start", index=i,
                            content_block={"type": "text", "text": ""})
                for word in _chunks(text):
                    await event("content_block_delta", index=i,
                                delta={"type": "text_delta", "text": word})
                    if reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
            await event("content_block_stop", index=i)
        await event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                    usage={"output_tokens": out_tokens})
        await event("message_stop")
        await resp.write_eof()
        return resp


def _anthropic_answer(body: dict[str, Any]) -> str:
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    if isinstance(content, str):
        return f"echo: {content}"
    texts: list[str] = []
    for block in content or ():
        if block.get("type") == "tool_result":
            result = block.get("content")
            if isinstance(result, list):
                result = "".join(str(b.get("text", "")) for b in result)
            return f"tool said: {result}"
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
    return "echo: " + "".join(texts)


class ScriptedGemini(ScriptedUpstream):
    """Google's Gemini API (``generateContent`` and ``streamGenerateContent``) on a free
    loopback port. The model comes from the URL; requests are recorded with path
    ``gemini`` and their query string (where the API key travels)."""

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{prefix:.*}models/{call}", self._generate)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        body = json.loads(await request.read())
        reply = await self._script(request, "gemini", model, body)
        if reply.status >= 400:
            return _error(reply, {"error": {
                "code": reply.status, "message": _message(reply),
                "status": _GOOGLE_STATUS.get(reply.status, "INTERNAL")}})
        text = reply.text if reply.text is not None else _gemini_answer(body)
        usage = {"promptTokenCount": 7, "candidatesTokenCount": len(text.split()),
                 "totalTokenCount": 7 + len(text.split())}
        if reply.tool_calls:
            parts: list[dict[str, Any]] = [
                {"functionCall": {"name": name, "args": dict(args)}}
                for name, args in reply.tool_calls]
        else:
            parts = [{"text": text}]

        def doc(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts},
                                    "index": 0}
            out: dict[str, Any] = {"candidates": [cand], "modelVersion": model}
            if finish:
                cand["finishReason"] = finish
                out["usageMetadata"] = usage
            return out

        if method != "streamGenerateContent":
            return web.json_response(doc(parts, "STOP"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        pieces = [[p] for p in parts] if reply.tool_calls else [
            [{"text": w}] for w in _chunks(text)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunk = json.dumps(doc(piece, "STOP" if last else None))
            await resp.write(f"data: {chunk}\r\n\r\n".encode())
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
        await resp.write_eof()
        return resp


def _gemini_answer(body: dict[str, Any]) -> str:
    last = (body.get("contents") or [{}])[-1]
    texts: list[str] = []
    for part in last.get("parts") or ():
        # protobuf JSON: either spelling of a field is valid, and LiteLLM sends snake_case
        called = part.get("functionResponse") or part.get("function_response")
        if called is not None:
            response = called.get("response")
            if isinstance(response, dict) and "content" in response:
                response = response["content"]
            return f"tool said: {response if isinstance(response, str) else json.dumps(response)}"
        if "text" in part:
            texts.append(str(part["text"]))
    return "echo: " + "".join(texts)
