"""The web console: pipelines, runs, the router and the live log in a browser.

Served by the daemon itself at ``/`` and ``/ui/...``, behind ``server.token`` like
``/api`` (a browser signs in once at ``/ui/login`` and keeps the token in an HttpOnly,
SameSite=Strict cookie). Pages are rendered on the server from the templates in
``templates/`` (so every read-only page works without JavaScript); the plain JavaScript
modules in ``static/`` add live updates over server-sent events, the try-it form and
push-to-talk. Nothing is built and nothing comes from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..daemon import Daemon

HERE = Path(__file__).parent
STATIC = HERE / "static"


def setup(app: web.Application, daemon: Daemon) -> None:
    """Add the console's routes to the daemon's app."""
    from . import events, views

    hub = events.Hub.of(daemon)
    app.on_shutdown.append(lambda _app: hub.close())
    app.router.add_get("/", views.pipelines)
    app.router.add_get("/ui/", views.pipelines)
    app.router.add_get("/ui/pipelines", views.pipelines)
    app.router.add_get("/ui/pipelines/{name}", views.pipeline)
    app.router.add_get("/ui/runs", views.runs)
    app.router.add_get("/ui/runs/{id}", views.run)
    app.router.add_get("/ui/router", views.router)
    app.router.add_get("/ui/logs", views.logs)
    app.router.add_get("/ui/login", views.login_form)
    app.router.add_post("/ui/login", views.login)
    app.router.add_post("/ui/logout", views.logout)
    app.router.add_get("/ui/events", events.stream_events)
    app.router.add_get("/ui/logs/stream", events.stream_logs)
    app.router.add_static("/ui/static/", STATIC)
