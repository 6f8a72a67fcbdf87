"""The ``harkd`` command line. Thin: each command calls the programmatic API."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__

EX_CONFIG = 78


def _import_structlog() -> None:
    """Import structlog with ``rich`` hidden from it. structlog loads rich, when it happens
    to be installed, for tracebacks harkd never shows (``format_exc_info`` turns exceptions
    into text before the renderer): about 50 ms of every command's start."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


def main(argv: list[str] | None = None, *, collect: bool | None = None) -> int:
    """The command line. ``collect``: whether the cyclic collector is to run once the
    command has started (default: whether it runs now; ``python -m harkd`` turns it off
    before importing this module and passes True)."""
    # Starting allocates a great deal and frees little: the collector's passes over every
    # imported module's objects were about 35 ms of harkd run's 100-pipeline start. It is
    # off until the command has started (harkd run: until ready), then the objects made
    # so far are frozen out of later passes.
    global _RESUME
    _RESUME = gc.isenabled() if collect is None else collect
    gc.disable()
    try:
        return _main(argv)
    finally:
        _collect_again()


#: whether :func:`_collect_again` turns the collector back on (main turned it off)
_RESUME = False


#: the collector's first threshold once harkd run is serving: young objects allocated
#: before a pass (Python's default is 700). Each webhook run's objects wait in the run
#: log's queue for its batch window, so at 700 the collector walked them over and over:
#: 10,000 took the webhook's CPU per request from 107-124 to 101-107 us (bench/core.py
#: --quick --only throughput, three interleaved pairs); 50,000 gained nothing more.
GC_THRESHOLD = 10_000


def _collect_again(*_: object) -> None:
    """Turn the cyclic collector back on if :func:`main` turned it off, leaving what
    exists now out of its passes, and less often than Python's default."""
    global _RESUME
    if _RESUME:
        _RESUME = False
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        gc.enable()


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Only the command being run is built (all twelve with their options were a few ms
    # of every start); help, --version and an unknown command get the whole parser.
    parser = _parser(words[0] if words and not words[0].startswith("-") else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 64
    if args.func is not cmd_run:
        _collect_again()
    _import_structlog()
    from . import logs

    logs.configure("warning")  # until a command reads its settings: warnings to stderr
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, the one command of that name (the whole
    parser if there is none)."""
    p = argparse.ArgumentParser(prog="harkd", description="Run AI pipelines written as YAML.")
    p.add_argument("--version", action="version", version=f"harkd {__version__}")
    sub: Any = p.add_subparsers(dest="command", metavar="COMMAND")
    if only is not None:
        sub = _Only(sub, only)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="harkd.yaml to use (default: $HARKD_CONFIG, "
                                         "./harkd.yaml, /etc/harkd/harkd.yaml)")
        sp.add_argument("--pipelines", help="the pipelines folder")

    r = sub.add_parser("run", help="run the daemon")
    common(r)
    r.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8420)")
    r.add_argument("--state", help="state folder")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate pipelines and config; exit 78 on errors")
    common(c)
    c.add_argument("paths", nargs="*", help="files or folders (default: the pipelines "
                                            "folder and the config)")
    c.add_argument("--json", action="store_true", help="print errors as JSON")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("test", help="run the tests: of pipeline files; exit 1 if any fails")
    common(t)
    t.add_argument("paths", nargs="*", help="files or folders (default: the pipelines folder)")
    t.add_argument("--live", action="store_true",
                   help="use the configured models and let steps reach the network")
    t.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    t.add_argument("-k", dest="only", metavar="TEXT", help="only tests whose name contains TEXT")
    t.add_argument("-v", "--verbose", action="store_true", help="show the runs' log lines")
    t.set_defaults(func=cmd_test)

    i = sub.add_parser("invoke", help="run one pipeline once, in-process, print the result")
    common(i)
    i.add_argument("name")
    i.add_argument("--input", default=None, help="JSON input, or - to read it from stdin")
    i.set_defaults(func=cmd_invoke)

    a = sub.add_parser("ask", help="one question through the router")
    common(a)
    a.add_argument("prompt")
    a.add_argument("--model", default="default", help="model alias (default: default)")
    a.add_argument("--stream", action="store_true", help="print tokens as they come")
    a.set_defaults(func=cmd_ask)

    tk = sub.add_parser("talk", help="talk to a pipeline's WebSocket on a running daemon")
    common(tk)
    tk.add_argument("name", help="the pipeline (its trigger must be websocket)")
    tk.add_argument("--url", help="the daemon's base URL (default: from server.listen)")
    tk.add_argument("--mic", action="store_true",
                    help="speak: stream the microphone to an audio-mode pipeline")
    tk.add_argument("--device", help="with --mic: input device name or number "
                                     "(default: the system's default)")
    tk.add_argument("--turns", type=int, metavar="N",
                    help="with --mic: stop after N replies (default: until Ctrl-C)")
    tk.set_defaults(func=cmd_talk)

    ls = sub.add_parser("list", help="pipelines, triggers and states")
    common(ls)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--offline", action="store_true", help="do not ask a running daemon")
    ls.add_argument("--tools", action="store_true",
                    help="the tools llm steps may use (MCP servers are started to list theirs)")
    ls.set_defaults(func=cmd_list)

    rn = sub.add_parser("runs", help="the running daemon's run log, newest first")
    common(rn)
    rn.add_argument("name", nargs="?", help="only this pipeline's runs")
    rn.add_argument("--status", choices=["ok", "error", "cancelled", "busy", "running",
                                         "interrupted"])
    rn.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    rn.add_argument("--id", help="show one run in full")
    rn.add_argument("--json", action="store_true")
    rn.set_defaults(func=cmd_runs)

    h = sub.add_parser("health", help="probe a running daemon's /healthz; exit 0 if healthy")
    h.add_argument("--config", help="harkd.yaml whose server.listen to probe")
    h.add_argument("--url", help="URL to probe (default: /healthz of server.listen)")
    h.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    h.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    h.set_defaults(func=cmd_health)

    pl = sub.add_parser("plugins", help="installed steps and triggers, and plugins that failed")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    s = sub.add_parser("schema", help="print the generated JSON Schemas")
    s.add_argument("--kind", choices=["pipeline", "harkd"], help="print only one")
    s.add_argument("--builtin", action="store_true",
                   help="only harkd's own kinds (as the repository's schemas/ holds)")
    s.add_argument("--write", metavar="DIR", help="write NAME.schema.json files into DIR")
    s.set_defaults(func=cmd_schema)
    if isinstance(sub, _Only) and not sub.found:
        return _parser()
    return p


class _Only:
    """The subparsers of :func:`_parser` that build just the command ``name``: the others'
    ``add_parser`` gives a stand-in that ignores their arguments."""

    def __init__(self, sub: Any, name: str) -> None:
        self.sub, self.name, self.found = sub, name, False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name != self.name:
            return _Skipped()
        self.found = True
        return self.sub.add_parser(name, **kwargs)


class _Skipped:
    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_defaults(self, **kwargs: Any) -> None:
        pass


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from . import config, logs
    from .errors import ConfigErrors

    overrides = {"pipelines": getattr(args, "pipelines", None), **extra}
    try:
        s = config.load(getattr(args, "config", None), overrides)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
    logs.configure(getattr(args, "log_level", None) or s.log_level, s.log_format)
    return s


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon, StartupError

    s = _settings(args, listen=args.listen, state=args.state, log_level=args.log_level)
    daemon = Daemon(s)
    try:
        return asyncio.run(daemon.serve(_collect_again))
    except StartupError as exc:
        print(f"harkd: {exc}", file=sys.stderr)
        return exc.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check
    from .settings import aliases

    paths = args.paths
    loopback, known = True, None
    if not paths or args.config:
        s = _settings(args)
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

    s = _settings(args)
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

    s = _settings(args)
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

    s = _settings(args)
    result = asyncio.run(invoke(s, args.name, _read_input(args.input)))
    if not result.ok:
        print(f"harkd: run {result.run_id} failed: {result.error}", file=sys.stderr)
        return 1
    _print_output(result.output)
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from .errors import HarkError
    from .runtime import ask

    s = _settings(args)
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

    s = _settings(args)
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

    s = _settings(args)
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

    url = args.url or health.healthz_url(_settings(args))
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))

