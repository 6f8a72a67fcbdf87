"""The ``harkd`` commands other than ``run``, one function each (``cmd_<name>``): each reads
the settings and calls the programmatic API that tests also use. :mod:`harkd.cli` parses
the command line and imports this module only to run one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .cli_settings import EX_CONFIG, load_settings


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check
    from .settings import aliases

    paths = args.paths
    loopback, known = True, None
    if not paths or args.config:
        s = load_settings(args)
        paths = paths or [s.pipelines] + ([s.config_file] if s.config_file else [])
        loopback, known = s.loopback, aliases(s)
    else:
        from . import logs

        logs.configure("warning")
    report = check(paths, loopback=loopback, aliases=known)
    if args.json:
        print(json.dumps({"files": report.files,
                          "errors": [e.as_dict() for e in report.errors]}, indent=2))
    else:
        for err in report.errors:
            print(err)
        n = len(report.errors)
        summary = (f"{report.files} file(s) checked, all valid" if report.ok else
                   f"{report.files} file(s) checked, {n} error(s)")
        print(summary, file=sys.stderr)
    return 0 if report.ok else EX_CONFIG


def cmd_test(args: argparse.Namespace) -> int:
    import time

    from . import logs
    from .testrun import junit, run_tests

    s = load_settings(args)
    # Tests fail runs on purpose; their log lines would bury the report.
    logs.configure("debug" if args.verbose else "error", s.log_format)
    t0 = time.perf_counter()
    report = asyncio.run(run_tests(args.paths or [s.pipelines], s, live=args.live,
                                   only=args.only))
    for err in report.errors:
        print(f"FAIL {err}")
    for o in report.outcomes:
        where = f"{Path(o.file).name}: {o.name}"
        if o.ok:
            print(f"ok   {where} ({o.duration * 1000:.0f} ms)")
        else:
            print(f"FAIL {where}: {o.message}")
    elapsed = time.perf_counter() - t0
    if args.junit:
        Path(args.junit).write_text(junit(report, elapsed))
    print(f"{report.passed} passed, {report.failed + len(report.errors)} failed")
    return 0 if report.ok else 1


def cmd_talk(args: argparse.Namespace) -> int:
    from . import talk

    s = load_settings(args)
    host = s.host if s.host not in ("0.0.0.0", "::") else "127.0.0.1"
    base = (args.url or f"http://{host}:{s.port}").rstrip("/")
    try:
        ep = talk.endpoint(base, args.name, s.token)
        if args.mic or ep.mode == "audio":
            device = int(args.device) if (args.device or "").isdigit() else args.device
            return asyncio.run(talk.talk_mic(ep, sys.stdout, turns=args.turns, device=device))
        prompt = "> " if sys.stdin.isatty() else None
        return asyncio.run(talk.talk_text(ep, talk.lines_from(sys.stdin, prompt), sys.stdout))
    except talk.TalkError as exc:
        print(f"harkd: {exc}", file=sys.stderr)
        return 69


def _read_input(raw: str | None) -> Any:
    if raw is None:
        return None
    text = sys.stdin.read() if raw == "-" else raw
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _print_output(output: Any) -> None:
    if isinstance(output, str):
        print(output)
    else:
        from .values import jsonable  # speech and audio as {"type": ...}, not a repr

        print(json.dumps(output, indent=2, ensure_ascii=False, default=jsonable))


def cmd_invoke(args: argparse.Namespace) -> int:
    from .runtime import invoke

    s = load_settings(args)
    result = asyncio.run(invoke(s, args.name, _read_input(args.input)))
    if not result.ok:
        print(f"harkd: run {result.run_id} failed: {result.error}", file=sys.stderr)
        return 1
    _print_output(result.output)
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from .errors import HarkError
    from .runtime import ask

    s = load_settings(args)
    try:
        text = asyncio.run(ask(s, args.prompt, model=args.model, stream=args.stream))
    except HarkError as exc:
        print(f"harkd: {exc}", file=sys.stderr)
        return 1
    if not args.stream:
        print(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .runtime import list_pipelines

    s = load_settings(args)
    if args.tools:
        return _list_tools(s, args.json)
    source, items = asyncio.run(list_pipelines(s, offline=args.offline))
    if args.json:
        print(json.dumps({"source": source, "pipelines": items}, indent=2, default=str))
        return 0
    rows = [("NAME", "STATE", "TRIGGER", "VERSION", "ERRORS")]
    for p in items:
        rows.append((p["name"], p["state"], _trigger_text(p.get("trigger")),
                     str(p.get("version", "")), str(len(p.get("errors") or []))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"({source})", file=sys.stderr)
    for p in items:
        for e in p.get("errors") or []:
            print(f"{e['file']}:{e['line']}:{e['column']}: {e['message']}", file=sys.stderr)
    return 0


def _list_tools(s: Any, as_json: bool) -> int:
    from .tools import available
    from .tools.mcp_client import list_tools

    rows = [{"name": name, "source": "builtin" if t.fn.__module__.startswith("harkd.")
             else "plugin", "description": t.description}
            for name, t in sorted(available().items())]
    rows += asyncio.run(list_tools(s))
    failed = 1 if any("error" in r for r in rows) else 0
    if as_json:
        print(json.dumps({"tools": rows}, indent=2))
        return failed
    table = [("NAME", "SOURCE", "DESCRIPTION")] + [
        (r["name"], r["source"], r.get("error") or r["description"]) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    for r in table:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip())
    return failed


def cmd_runs(args: argparse.Namespace) -> int:
    import datetime

    from .runtime import DaemonUnreachable, list_runs

    s = load_settings(args)
    try:
        data = asyncio.run(list_runs(s, pipeline=args.name, status=args.status,
                                     limit=args.limit, run_id=args.id))
    except DaemonUnreachable as exc:
        print(f"harkd: {exc}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    if args.json or args.id:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return 0
    rows = [("ID", "PIPELINE", "TRIGGER", "STARTED", "STATUS", "MS", "ERROR")]
    for r in data["runs"]:
        started = datetime.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M:%S")
        ms = "" if r["duration_ms"] is None else f"{r['duration_ms']:.1f}"
        rows.append((r["id"], r["pipeline"], r["trigger"] or "-", started, r["status"], ms,
                     (r["error"] or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _trigger_text(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    kind = t.get("kind", "?")
    detail = t.get("path") or t.get("schedule") or t.get("device") or ""
    text = f"{kind} {detail}".strip()
    if t.get("next_fire"):
        text += f" (next {t['next_fire']})"
    return text


def cmd_health(args: argparse.Namespace) -> int:
    from . import health

    url = args.url or health.healthz_url(load_settings(args))
    result = health.probe(url, timeout=args.timeout)
    if not result.ok:
        print(f"harkd: unhealthy: {result.detail}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(result.detail)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .config import config_schema
    from .core import registry, schema

    reg = registry.Registry.from_entry_points("harkd") if args.builtin else registry.default()
    docs = {
        "pipeline": schema.pipeline_schema(reg),
        "harkd": config_schema(),
    }
    if args.kind:
        docs = {args.kind: docs[args.kind]}
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (out / f"{name}.schema.json").write_text(schema.dump(doc))
        return 0
    if len(docs) == 1:
        print(schema.dump(next(iter(docs.values()))), end="")
    else:
        print(schema.dump({f"{k}.schema.json": v for k, v in docs.items()}), end="")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .core import registry

    reg = registry.default()
    kinds = sorted(reg.describe(), key=lambda k: (k["origin"] != f"harkd {__version__}",
                                                  k["origin"], k["kind"], k["name"]))
    problems = [vars(p) for p in reg.problems]
    if args.json:
        print(json.dumps({"kinds": kinds, "problems": problems}, indent=2))
        return 0
    rows = [("KIND", "NAME", "FROM", "SUMMARY")] + [
        (k["kind"], k["name"], k["origin"], k["summary"][:60]) for k in kinds]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    for p in reg.problems:
        print(f"harkd: plugin {p.name} ({p.group} = {p.value}) is disabled: {p.error}",
              file=sys.stderr)
    return 1 if reg.problems else 0
