"""A scripted OpenAI-compatible upstream for the gateway and CLI benchmarks: it answers
chat completions at once with a fixed reply, so what is measured is the path in between.

``python bench/upstream.py PORT`` (on uvloop's loop with ``BENCH_BASELINE_LOOP=uvloop``,
as bare.py). Routes:

- ``POST /v1/chat/completions``: a fixed completion (SSE chunks when ``stream`` is true).
- ``POST /fail/v1/chat/completions``: always 500, as a broken first deployment.
- ``GET /v1/models``, ``GET /fail/v1/models``, ``GET /health``.
- ``GET /stats``: requests seen per route; ``POST /stats/reset`` zeroes them.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from aiohttp import web

REPLY = "Hello from the scripted upstream."
HITS: Counter[str] = Counter()
STATS: web.AppKey[Counter[str]] = web.AppKey("stats")


def _completion(model: str) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": REPLY}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }


async def chat(request: web.Request) -> web.StreamResponse:
    HITS["ok"] += 1
    body = await request.json()
    model = body.get("model", "fake")
    if not body.get("stream"):
        return web.json_response(_completion(model))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, word in enumerate(REPLY.split(" ")):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word},
                              "finish_reason": None}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    end = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
           "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await resp.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
    await resp.write_eof()
    return resp


async def fail(request: web.Request) -> web.Response:
    HITS["fail"] += 1
    await request.read()
    return web.json_response({"error": {"message": "scripted failure", "type": "server_error"}},
                             status=500)


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}]})


async def stats(request: web.Request) -> web.Response:
    if request.method == "POST":
        HITS.clear()
    return web.json_response(dict(HITS))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def app() -> web.Application:
    a = web.Application()
    a.router.add_post("/v1/chat/completions", chat)
    a.router.add_post("/chat/completions", chat)
    a.router.add_post("/fail/v1/chat/completions", fail)
    a.router.add_post("/fail/chat/completions", fail)
    a.router.add_get("/v1/models", models)
    a.router.add_get("/fail/v1/models", models)
    a.router.add_get("/stats", stats)
    a.router.add_post("/stats/reset", stats)
    a.router.add_get("/health", health)
    return a


if __name__ == "__main__":
    from bare import baseline_loop

    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=baseline_loop())
