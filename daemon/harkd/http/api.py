"""The admin API under ``/api``: pipelines, their states and errors, runs, reload.

Its OpenAPI 3.1 document is :data:`harkd.http.openapi.DOCUMENT`, served at
``/api/openapi.json``; a test checks that it names every route and that answers match it.

Protected by ``server.token`` (a bearer token) when one is configured; a daemon listening
off loopback refuses to start without one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from ..secrets import REDACTOR
from ..triggers.http import error_response, read_body, result_response, stream_sse

if TYPE_CHECKING:
    from .host import Host

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROTECTED = ("/api/", "/v1/", "/mcp")
#: the console's pages; a browser shows the token once and keeps it in this cookie
CONSOLE = ("/ui/",)
COOKIE = "harkd_token"
#: console paths anyone may fetch: the sign-in page and the static files
PUBLIC = ("/ui/login", "/ui/static/")


def setup(app: web.Application, daemon: Host) -> None:
    app.router.add_get("/api/pipelines", _pipelines)
    app.router.add_get("/api/pipelines/{name}", _pipeline)
    app.router.add_post("/api/pipelines/{name}/run", _run)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get("/api/runs", _runs)
    app.router.add_get("/api/runs/{id}", _run_record)
    app.router.add_get("/api/router", _router)
    app.router.add_get("/api/openapi.json", _openapi)


def refusal(daemon: Host, request: web.Request) -> web.StreamResponse | None:
    """How ``server.token`` answers ``request``: None to let it through, else the 401 or
    403 (a console page asked for without the token redirects to the sign-in page).

    The token guards ``/api``, ``/v1``, ``/mcp`` and the console. A bearer header works
    everywhere; the console's cookie works too, but a request that changes something
    with it must come from the console's own origin (no cross-site forms)."""
    token = daemon.settings.token
    if not token:
        return None
    path = request.path
    console = path == "/" or (path.startswith(CONSOLE) and not path.startswith(PUBLIC))
    if not console and not path.startswith(PROTECTED):
        return None
    got = request.headers.get("Authorization", "")
    supplied = got[7:] if got[:7].lower() == "bearer " else ""
    by_cookie = False
    if not supplied and COOKIE in request.cookies:
        supplied, by_cookie = request.cookies[COOKIE], True
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        if console and request.method == "GET":
            raise web.HTTPSeeOther("/ui/login?" + urlencode({"next": request.path_qs}))
        return error_response(401, "missing or invalid bearer token",
                              headers={"WWW-Authenticate": "Bearer"})
    if by_cookie and request.method not in ("GET", "HEAD") and not same_origin(request):
        return error_response(403, "a console request must come from the console")
    return None


def guard(app: web.Application, daemon: Host) -> None:
    """Put :func:`refusal` in front of every route of ``app`` so far (call it once all
    are added but the catch-all, whose handler asks :func:`refusal` itself).

    A wrapper per route rather than an aiohttp middleware: a middleware runs for every
    request, and with it aiohttp's own wrapper that keeps ``current_app``; together
    they were about 4% of a webhook request's instructions."""
    for route in app.router.routes():
        if not isinstance(route, web.ResourceRoute):
            continue
        wrapped = _guarded(daemon, route.handler)
        route._handler = wrapped  # aiohttp has no public way to replace a handler
        if route.handler is not wrapped:  # pragma: no cover - an aiohttp that changed
            raise RuntimeError(f"cannot guard {route.method} {route.resource}: this "
                               "aiohttp keeps route handlers elsewhere")


def _guarded(daemon: Host, handler: Handler
             ) -> Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]:
    async def check(request: web.Request) -> web.StreamResponse:
        refused = refusal(daemon, request)
        return refused if refused is not None else await handler(request)

    return check


def same_origin(request: web.Request) -> bool:
    """Whether a browser says the request comes from a page of this listener."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site") == "same-origin"
    return origin.split("://", 1)[-1] == request.host


def _daemon(request: web.Request) -> Host:
    from .host import HOST

    return request.app[HOST]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(REDACTOR.value(data), status=status,
                             dumps=lambda o: json.dumps(o, default=str))


async def _pipelines(request: web.Request) -> web.Response:
    catalog = _daemon(request).catalog
    items = [catalog.entries[n].describe() for n in sorted(catalog.entries)]
    return _json({"pipelines": items, "counts": catalog.counts()})


async def _pipeline(request: web.Request) -> web.Response:
    entry = _daemon(request).catalog.entries.get(request.match_info["name"])
    if entry is None:
        return error_response(404, f"no pipeline named {request.match_info['name']!r}")
    return _json(entry.describe())


async def _run(request: web.Request) -> web.StreamResponse:
    daemon = _daemon(request)
    name = request.match_info["name"]
    bound = daemon.catalog.bound(name)
    if bound is None:
        return error_response(404, f"no active pipeline named {name!r}")
    try:
        raw = await read_body(request, daemon.settings.max_body)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"body is larger than {daemon.settings.max_body:,} bytes")
    try:
        data = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        return error_response(400, f"body is not valid JSON: {exc.msg}")
    payload = data.get("input") if isinstance(data, dict) and "input" in data else data
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await stream_sse(request, bound, payload, {"kind": "api"})
    result = await bound.run(bound.new_run(payload, {"kind": "api"}))
    return result_response(result)


async def _reload(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    await daemon.reload()
    return _json({"status": "reloaded", "counts": daemon.catalog.counts()})


RUN_STATUSES = ("ok", "error", "cancelled", "busy", "running", "interrupted")
MAX_LIMIT = 500


async def _runs(request: web.Request) -> web.Response:
    runlog = _daemon(request).runlog
    if runlog is None:
        return error_response(503, "the run log is not open")
    q = request.query
    status = q.get("status")
    if status is not None and status not in RUN_STATUSES:
        return error_response(400, f"status must be one of {', '.join(RUN_STATUSES)}")
    try:
        limit = int(q.get("limit", "50"))
        cursor = int(q["cursor"]) if q.get("cursor") else None
    except ValueError:
        return error_response(400, "limit and cursor must be integers")
    try:
        since = _time(q.get("since"))
        until = _time(q.get("until"))
    except ValueError:
        return error_response(400, "since and until must be Unix times (seconds)")
    if not 1 <= limit <= MAX_LIMIT:
        return error_response(400, f"limit must be between 1 and {MAX_LIMIT}")
    runs = await runlog.query(pipeline=q.get("pipeline"), status=status, limit=limit + 1,
                              before=cursor, since=since, until=until)
    more = len(runs) > limit
    runs = runs[:limit]
    return _json({"runs": runs, "next_cursor": str(runs[-1]["seq"]) if more else None})


def _time(text: str | None) -> float | None:
    if not text:
        return None
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


async def _run_record(request: web.Request) -> web.Response:
    runlog = _daemon(request).runlog
    if runlog is None:
        return error_response(503, "the run log is not open")
    run = await runlog.get(request.match_info["id"])
    if run is None:
        return error_response(404, f"no run with id {request.match_info['id']!r} in the run log")
    return _json(run)


async def _router(request: web.Request) -> web.Response:
    return _json(_daemon(request).services.router.report())


async def _openapi(request: web.Request) -> web.Response:
    from .. import __version__
    from .openapi import document

    return web.json_response(document(__version__))
