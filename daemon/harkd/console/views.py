"""The console's pages, rendered on the server from ``templates/`` (Jinja2, autoescaped).

Each handler gathers what its page shows (from the catalog, the run log, the router, the
log tail) and renders it whole, so the read-only pages need no JavaScript; the scripts
in ``static/`` only refresh them and add the interactive parts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from .. import __version__
from ..errors import HarkError
from ..http.api import RUN_STATUSES
from ..logs import TAIL
from ..secrets import REDACTOR
from .events import log_filter

if TYPE_CHECKING:
    import jinja2

    from ..http.host import Host

STATUSES = RUN_STATUSES
WITHIN = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
PAGE = 50
LEVEL_NAMES = ("debug", "info", "warning", "error")
#: how much of a pipeline file is read to show the lines around an error
MAX_EXCERPT_FILE = 1 << 20

HERE = Path(__file__).parent
STATIC = HERE / "static"


@cache
def _env() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, ms=ms, pretty=pretty)
    env.globals.update(asset=asset, STATUSES=STATUSES)
    return env


@cache
def asset(name: str) -> str:
    """The URL of a static file, with a digest of its bytes so browsers may cache it."""
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return f"/ui/static/{name}?v={digest}"


def when(ts: Any) -> str:
    if not isinstance(ts, int | float) or not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value >= 10000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _daemon(request: web.Request) -> Host:
    from ..http.host import HOST

    return request.app[HOST]


def render(request: web.Request, template: str, status: int = 200,
           **context: Any) -> web.Response:
    """A page of the console, with the headers every page carries."""
    daemon = _daemon(request)
    html = _env().get_template(template).render(
        request=request, signed_in=bool(daemon.settings.token), version=__version__,
        **context)
    host = request.host
    csp = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
           f"connect-src 'self' ws://{host} wss://{host}; media-src 'self' blob:; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status,
                        headers={"Content-Security-Policy": csp,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "same-origin",
                                 "Cache-Control": "no-store"})


# -- pipelines ---------------------------------------------------------------------------


def excerpt(file: str, line: int, around: int = 2) -> list[tuple[int, str, bool]]:
    """The lines of ``file`` around ``line`` (1-based): (number, text, is_the_line), with
    any known secret value redacted."""
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            lines = f.read(MAX_EXCERPT_FILE).splitlines()
    except OSError:
        return []
    if not 1 <= line <= len(lines):
        return []
    lo, hi = max(1, line - around), min(len(lines), line + around)
    return [(n, REDACTOR(lines[n - 1]), n == line) for n in range(lo, hi + 1)]


async def _described(daemon: Host, names: list[str]) -> list[dict[str, Any]]:
    """Pipelines as ``/api/pipelines`` describes them, each error with its excerpt (the
    files are read in a worker thread, off the event loop)."""
    items = [daemon.catalog.entries[n].describe() for n in names]

    def read() -> None:
        for item in items:
            item["errors"] = [dict(e, excerpt=excerpt(e["file"], e["line"]))
                              for e in item["errors"]]

    if any(item["errors"] for item in items):
        await asyncio.to_thread(read)
    return items


async def pipelines(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    items = await _described(daemon, sorted(daemon.catalog.entries))
    return render(request, "pipelines.html", nav="pipelines", pipelines=items,
                  counts=daemon.catalog.counts())


async def pipeline(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    name = request.match_info["name"]
    if name not in daemon.catalog.entries:
        return render(request, "missing.html", 404, nav="pipelines",
                      what=f"No pipeline named {name!r}.")
    runs = await daemon.runlog.query(pipeline=name, limit=10) if daemon.runlog else []
    [item] = await _described(daemon, [name])
    return render(request, "pipeline.html", nav="pipelines", p=item, runs=runs)


# -- runs --------------------------------------------------------------------------------


async def runs(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    q = request.query
    pipeline = q.get("pipeline") or None
    status = q.get("status") if q.get("status") in STATUSES else None
    within = q.get("within") if q.get("within") in WITHIN else None
    cursor = int(q["cursor"]) if q.get("cursor", "").isdigit() else None
    since = time.time() - WITHIN[within] if within else None
    found: list[dict[str, Any]] = []
    if daemon.runlog is not None:
        found = await daemon.runlog.query(pipeline=pipeline, status=status, limit=PAGE + 1,
                                          before=cursor, since=since)
    more = len(found) > PAGE
    found = found[:PAGE]
    names = sorted(set(daemon.catalog.entries) | ({pipeline} if pipeline else set()))
    filters = {"pipeline": pipeline or "", "status": status or "", "within": within or ""}
    query = {k: v for k, v in filters.items() if v}
    return render(request, "runs.html", nav="runs", runs=found, names=names, filters=filters,
                  within=list(WITHIN), first_page=cursor is None,
                  next_url="/ui/runs?" + urlencode({**query, "cursor": found[-1]["seq"]})
                  if more else None)


def depth(path: str) -> int:
    """How deep a step sits: ``"2"`` is 0, ``"2.map[3].0"`` and ``"1.parallel.a.0"``
    are 1 (one list of steps inside another), and so on."""
    return max(0, sum(part.isdigit() for part in path.split(".")) - 1)


def waterfall(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's steps as bars: offset and width in percent of the run's duration,
    indented by the nesting of each step's ``path`` (records without one use the index)."""
    steps = record.get("steps") or []
    t0 = record["started"]
    total = record.get("duration_ms") or 0.0
    for s in steps:
        end = (s.get("started", t0) - t0) * 1000 + (s.get("duration_ms") or 0.0)
        total = max(total, end)
    total = total or 1.0
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(steps):
        if "kind" not in s and "omitted" in s:  # the run log keeps the first steps only
            rows.append({"omitted": s["omitted"], "kind": "", "detail": None, "path": ""})
            continue
        path = str(s.get("path") or s.get("index", i))
        start = max(0.0, (s.get("started", t0) - t0) * 1000)
        took = s.get("duration_ms") or 0.0
        rows.append({"path": path, "depth": depth(path), "kind": s.get("kind", "?"),
                     "name": s.get("name"), "status": s.get("status", "?"),
                     "start_ms": start, "duration_ms": took,
                     "left": round(min(100.0, start / total * 100), 2),
                     "width": round(max(0.4, min(100.0, took / total * 100)), 2),
                     "detail": s.get("detail")})
    return rows


def llm_calls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r["detail"], step=r["path"]) for r in rows
            if r["kind"] == "llm" and isinstance(r["detail"], dict)]


#: what a voice step records, as a person reads it: (detail key, label, unit)
VOICE_TIMINGS = (("audio_seconds", "audio heard", "s"), ("stt_ms", "transcription", "ms"),
                 ("first_audio_ms", "first audio after the text", "ms"),
                 ("seconds", "reply spoken", "s"), ("interrupted", "interrupted", ""))


def voice_turn(record: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trace of a voice turn (how the utterance was cut, as bars over the turn's
    length) and the speech steps' timings."""
    trigger = record.get("trigger_data")
    turn = trigger.get("turn") if isinstance(trigger, dict) else None
    timings: list[tuple[str, str, Any, str]] = []
    for r in rows:
        d = r["detail"] if isinstance(r["detail"], dict) else {}
        if turn is None and isinstance(d.get("turn"), dict):
            turn = d["turn"]
        timings += [(r["path"], f"{r['kind']}: {label}", d[key], unit)
                    for key, label, unit in VOICE_TIMINGS if key in d]
    if turn is None and not timings:
        return None
    trace = turn or {}
    bars: dict[str, tuple[float, float]] = {}
    try:
        end = float(trace["ended"]) or 1.0
        start, stop = float(trace["speech_start"]), float(trace["speech_end"])
        bars = {"speech": (start / end * 100, (stop - start) / end * 100),
                "waited": (stop / end * 100, (end - stop) / end * 100)}
    except (KeyError, TypeError, ValueError):
        pass
    return {"trace": trace, "bars": {k: (round(a, 2), round(b, 2)) for k, (a, b) in
                                     bars.items()}, "timings": timings}


async def run(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    run_id = request.match_info["id"]
    record = await daemon.runlog.get(run_id) if daemon.runlog else None
    if record is None:
        return render(request, "missing.html", 404, nav="runs",
                      what=f"No run with id {run_id!r} in the run log.")
    rows = waterfall(record)
    return render(request, "run.html", nav="runs", r=record, steps=rows,
                  llm=llm_calls(rows), voice=voice_turn(record, rows))


# -- router and logs ---------------------------------------------------------------------


async def router(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    try:
        report: dict[str, Any] | None = daemon.services.router.report()
        problem = None
    except HarkError as exc:
        report, problem = None, str(exc)
    return render(request, "router.html", nav="router", report=report, problem=problem)


async def logs(request: web.Request) -> web.Response:
    daemon = _daemon(request)
    q = request.query
    pipeline = q.get("pipeline") or ""
    level = q.get("level") if q.get("level") in LEVEL_NAMES else ""
    lines = [line for line in TAIL.since(0) if log_filter(pipeline, level)(line)][-200:]
    last = TAIL.lines[-1]["seq"] if TAIL.lines else 0
    return render(request, "logs.html", nav="logs", lines=lines, last=last,
                  names=sorted(daemon.catalog.entries), pipeline=pipeline, level=level,
                  levels=LEVEL_NAMES)


# -- signing in --------------------------------------------------------------------------


def _next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", nav="", next=_next(request.query.get("next")),
                  failed=False)


async def login(request: web.Request) -> web.StreamResponse:
    from ..http.api import COOKIE

    daemon = _daemon(request)
    form = await request.post()
    target = _next(str(form.get("next") or ""))
    token = daemon.settings.token
    if not token:
        raise web.HTTPSeeOther(target)
    given = str(form.get("token") or "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return render(request, "login.html", 401, nav="", next=target, failed=True)
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    from ..http.api import COOKIE

    response = web.Response(status=303, headers={"Location": "/ui/login"})
    response.del_cookie(COOKIE, path="/")
    return response


def static_files() -> list[Path]:
    """Every file the console sends to a browser (the bench weighs them)."""
    return sorted(p for p in STATIC.iterdir() if p.is_file())
