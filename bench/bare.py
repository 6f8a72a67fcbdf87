"""The baseline server: a bare aiohttp handler doing the same work as harkd's one-step
template webhook (read a JSON body, render the template in Jinja's immutable sandbox,
answer text/plain), with nothing else. ``python bench/bare.py PORT``; on asyncio's loop,
or on uvloop's with ``BENCH_BASELINE_LOOP=uvloop`` (harkd's own default)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aiohttp import web
from jinja2 import ChainableUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE = ImmutableSandboxedEnvironment(undefined=ChainableUndefined).from_string(
    "Hello, {{ input.name | default('world') }}!")


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    data = json.loads(body) if body else None
    return web.Response(text=TEMPLATE.render(input=data), content_type="text/plain",
                        charset="utf-8")


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/hooks/{name}", hook)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None, handle_signals=True, loop=baseline_loop())


def baseline_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop's loop when ``BENCH_BASELINE_LOOP=uvloop``; else None (asyncio's)."""
    if os.environ.get("BENCH_BASELINE_LOOP") != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
