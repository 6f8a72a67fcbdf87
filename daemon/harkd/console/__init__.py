"""The web console: pipelines, runs, the router and the live log in a browser.

Served by the daemon itself at ``/`` and ``/ui/...``, behind ``server.token`` like
``/api`` (a browser signs in once at ``/ui/login`` and keeps the token in an HttpOnly,
SameSite=Strict cookie). Pages are rendered on the server from the templates in
``templates/`` (so every read-only page works without JavaScript); the plain JavaScript
modules in ``static/`` add live updates over server-sent events, the try-it form and
push-to-talk. Nothing is built and nothing comes from a CDN.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..http.host import Host

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def setup(app: web.Application, daemon: Host) -> None:
    """Add the console's routes to the daemon's app."""
    from . import events, views

    hub = events.Hub.of(daemon)
    app.on_shutdown.append(lambda _app: hub.close())
    for path, handler in (("/", views.pipelines), ("/ui/", views.pipelines),
                          ("/ui/pipelines", views.pipelines),
                          ("/ui/pipelines/{name}", views.pipeline), ("/ui/runs", views.runs),
                          ("/ui/runs/{id}", views.run), ("/ui/router", views.router),
                          ("/ui/logs", views.logs)):
        app.router.add_get(path, timed(handler))
    app.router.add_get("/ui/login", views.login_form)
    app.router.add_post("/ui/login", views.login)
    app.router.add_post("/ui/logout", views.logout)
    app.router.add_get("/ui/events", events.stream_events)
    app.router.add_get("/ui/logs/stream", events.stream_logs)
    app.router.add_static("/ui/static/", views.STATIC)


def timed(handler: Handler) -> Handler:
    """Report the time a page took on the server in a ``Server-Timing`` header (the
    browser's developer tools show it; ``bench/console.py`` reads it)."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        response = await handler(request)
        response.headers["Server-Timing"] = f"page;dur={(time.perf_counter() - t0) * 1000:.2f}"
        return response

    return run
