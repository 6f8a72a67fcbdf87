"""OpenAI-compatible servers (OpenAI, llama.cpp, vLLM, LM Studio, OpenRouter, ...) through
the pooled client: ``POST {api_base}/chat/completions``, plain and SSE-streamed."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from ..values import json_bytes, json_loads
from .backends import SessionPool, connection_error, http_error, post
from .config import KEY_ENV, Deployment, is_local_url
from .errors import BackendFailed, MissingApiKey
from .types import ChatRequest, Completion, Delta, ToolCall, Usage
from .wire import WireError

JSON_HEADERS = {"Content-Type": "application/json"}


def request_body(model: str, dep: Deployment, req: ChatRequest, stream: bool) -> dict[str, Any]:
    """The OpenAI chat-completions body of a request."""
    body: dict[str, Any] = {"model": model,
                            "messages": [m if type(m) is dict else dict(m) for m in req.messages]}
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:
        body["tools"] = [dict(t) for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
    if req.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": dict(req.json_schema)}}
    if dep.params:
        body.update(dep.params)
    if req.params:
        body.update(req.params)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def parse_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    calls = []
    for i, c in enumerate(raw):
        fn = c.get("function") or {}
        args = fn.get("arguments", "")
        calls.append(ToolCall(str(c.get("id") or f"call_{i}"), str(fn.get("name", "")),
                              args if isinstance(args, str) else json.dumps(args)))
    return tuple(calls)


class OpenAIBackend:
    """Chat completions over one pooled session per base URL."""

    provider = "openai"

    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool
        #: the headers of each API key, made once (callers must not change them)
        self._auth: dict[str, dict[str, str]] = {}

    async def prepare(self, dep: Deployment) -> str:
        return dep.api_base or ""

    def _headers(self, dep: Deployment, base: str) -> dict[str, str]:
        key = dep.api_key
        if key is None and dep.provider == "openai" and not is_local_url(base):
            key = os.environ.get(KEY_ENV["openai"])
            if not key:
                raise MissingApiKey(dep.label, KEY_ENV["openai"])
        if key:
            headers = self._auth.get(key)
            if headers is None:
                if len(self._auth) >= 64:
                    self._auth.clear()
                headers = self._auth[key] = {**JSON_HEADERS, "Authorization": f"Bearer {key}"}
            return headers
        return JSON_HEADERS

    async def complete(self, dep: Deployment, base: str, req: ChatRequest) -> Completion:
        headers = self._headers(dep, base)
        data = json_bytes(request_body(dep.model, dep, req, False))
        raw = await post(self.pool, dep, base, "/chat/completions", data, headers)
        try:
            doc = json_loads(raw)
            choice = doc["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendFailed(f"{dep.label} sent a malformed completion: "
                                f"{raw[:200].decode(errors='replace')}") from None
        return Completion(message.get("content") or "", parse_usage(doc.get("usage")),
                          choice.get("finish_reason"),
                          parse_tool_calls(message.get("tool_calls")))

    async def stream(self, dep: Deployment, base: str, req: ChatRequest
                     ) -> AsyncIterator[Delta]:
        headers = {**self._headers(dep, base), "Accept": "text/event-stream"}
        data = json_bytes(request_body(dep.model, dep, req, True))
        origin = self.pool.wire.origin(base)
        opened: Any
        failure: type[Exception]
        if origin is not None:
            opened = self.pool.wire.stream(origin, "/chat/completions", data, headers)
            failure = WireError
        else:  # not plain http(s): aiohttp's client
            import aiohttp

            opened = self.pool.get(base).post(base + "/chat/completions", data=data,
                                              headers=headers)
            failure = aiohttp.ClientError
        try:
            async with opened as resp:
                if resp.status >= 400:
                    raise http_error(dep, resp.status, await resp.read(), resp.headers)
                async for line in resp if origin is not None else resp.content:
                    if line.startswith(b"data:"):
                        delta = _sse_delta(dep, line)
                        if delta is _DONE:
                            return
                        if delta is not None:
                            yield delta
        except failure as exc:
            raise connection_error(dep, exc) from None


#: what :func:`_sse_delta` gives for ``data: [DONE]``
_DONE = Delta()


def _sse_delta(dep: Deployment, line: bytes) -> Delta | None:
    """The delta of one ``data:`` line (None if it carries nothing, :data:`_DONE` for
    the end of the stream)."""
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return _DONE
    try:
        doc = json_loads(payload)
    except ValueError:
        raise BackendFailed(f"{dep.label} sent a malformed stream event: "
                            f"{payload[:200].decode(errors='replace')}") from None
    if not isinstance(doc, dict):
        return None
    if "error" in doc:
        raise BackendFailed(f"{dep.label} failed mid-stream: {doc['error']}")
    usage = parse_usage(doc.get("usage"))
    choices = doc.get("choices") or []
    if not choices:
        return Delta(usage=usage) if usage else None
    choice = choices[0]
    d = choice.get("delta") or {}
    calls = tuple(
        (int(c.get("index", i)), str(c.get("id") or ""),
         str((c.get("function") or {}).get("name") or ""),
         str((c.get("function") or {}).get("arguments") or ""))
        for i, c in enumerate(d.get("tool_calls") or ()))
    text = d.get("content") or ""
    finish = choice.get("finish_reason")
    if not (text or calls or usage or finish):
        return None
    return Delta(text, calls, usage, finish)
