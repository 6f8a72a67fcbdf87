"""Ollama's native API through the pooled client: ``POST {api_base}/api/chat``, with
newline-delimited JSON when streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .backends import SessionPool, connection_error, http_error, post
from .config import Deployment
from .errors import BackendFailed
from .types import ChatRequest, Completion, Delta, ToolCall, Usage


def _messages(req: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for m in req.messages:
        msg = dict(m)
        if msg.get("tool_calls"):
            # Ollama wants arguments as an object, not the JSON text OpenAI clients send.
            msg["tool_calls"] = [{"function": {
                "name": c["function"]["name"],
                "arguments": _loads(c["function"].get("arguments") or "{}")}}
                for c in msg["tool_calls"]]
        out.append(msg)
    return out


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return {}


def request_body(dep: Deployment, req: ChatRequest, stream: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if req.temperature is not None:
        options["temperature"] = req.temperature
    if req.max_tokens is not None:
        options["num_predict"] = req.max_tokens
    if req.stop:
        options["stop"] = list(req.stop)
    body: dict[str, Any] = {"model": dep.model, "messages": _messages(req), "stream": stream}
    if options:
        body["options"] = options
    if req.tools:
        body["tools"] = [dict(t) for t in req.tools]
    if req.json_schema is not None:
        body["format"] = dict(req.json_schema)
    body.update(dep.params)
    body.update(req.params)
    return body


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(f"call_{i}", str(c["function"]["name"]),
                 json.dumps(c["function"].get("arguments") or {}))
        for i, c in enumerate(message.get("tool_calls") or ()))


def _usage(doc: dict[str, Any]) -> Usage | None:
    if "prompt_eval_count" not in doc and "eval_count" not in doc:
        return None
    return Usage(int(doc.get("prompt_eval_count") or 0), int(doc.get("eval_count") or 0))


class OllamaBackend:
    """Ollama's ``/api/chat`` over one pooled session per base URL."""

    provider = "ollama"

    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool

    async def prepare(self, dep: Deployment) -> str:
        return (dep.api_base or "").rstrip("/")

    async def complete(self, dep: Deployment, base: str, req: ChatRequest) -> Completion:
        data = json.dumps(request_body(dep, req, False)).encode()
        raw = await post(self.pool, dep, base, "/api/chat", data,
                         {"Content-Type": "application/json"})
        try:
            doc = json.loads(raw)
            message = doc["message"]
        except (ValueError, KeyError, TypeError):
            raise BackendFailed(f"{dep.label} sent a malformed answer: "
                                f"{raw[:200].decode(errors='replace')}") from None
        return Completion(message.get("content") or "", _usage(doc), doc.get("done_reason"),
                          _tool_calls(message))

    async def stream(self, dep: Deployment, base: str, req: ChatRequest
                     ) -> AsyncIterator[Delta]:
        data = json.dumps(request_body(dep, req, True)).encode()
        try:
            async with self.pool.get(base).post(
                    base + "/api/chat", data=data,
                    headers={"Content-Type": "application/json"}) as resp:
                if resp.status >= 400:
                    raise http_error(dep, resp.status, await resp.read(), resp.headers)
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        raise BackendFailed(f"{dep.label} sent a malformed stream line") \
                            from None
                    if "error" in doc:
                        raise BackendFailed(f"{dep.label} failed mid-stream: {doc['error']}")
                    message = doc.get("message") or {}
                    calls = tuple((i, c.id, c.name, c.arguments)
                                  for i, c in enumerate(_tool_calls(message)))
                    text = message.get("content") or ""
                    if text or calls:
                        yield Delta(text, calls)
                    if doc.get("done"):
                        yield Delta(usage=_usage(doc), finish_reason=doc.get("done_reason"))
                        return
        except aiohttp.ClientError as exc:
            raise connection_error(dep, exc) from None
