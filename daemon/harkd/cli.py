"""The ``harkd`` command line. Thin: each command calls the programmatic API.

This module is what every command starts with (the collector off while starting, a
parser of just the command given) and ``harkd run``; the other
commands are in :mod:`harkd.commands`, imported only to run one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable
from typing import Any

from . import __version__
from .cli_settings import EX_CONFIG, load_settings


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
    # numpy's OpenBLAS runs a matrix product on a thread per core. The echo canceller's
    # fit (a 6400x32 product, on the event loop) then waited for threads Whisper and
    # Piper kept busy: 174 ms at p99 while Piper synthesized; 0.66 ms on one thread.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
    r.add_argument("--loop", choices=("auto", "uvloop", "asyncio"),
                   help="event loop (default auto: uvloop when installed)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate pipelines and config; exit 78 on errors")
    common(c)
    c.add_argument("paths", nargs="*", help="files or folders (default: the pipelines "
                                            "folder and the config)")
    c.add_argument("--json", action="store_true", help="print errors as JSON")
    c.set_defaults(func=_command)

    t = sub.add_parser("test", help="run the tests: of pipeline files; exit 1 if any fails")
    common(t)
    t.add_argument("paths", nargs="*", help="files or folders (default: the pipelines folder)")
    t.add_argument("--live", action="store_true",
                   help="use the configured models and let steps reach the network")
    t.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    t.add_argument("-k", dest="only", metavar="TEXT", help="only tests whose name contains TEXT")
    t.add_argument("-v", "--verbose", action="store_true", help="show the runs' log lines")
    t.set_defaults(func=_command)

    i = sub.add_parser("invoke", help="run one pipeline once, in-process, print the result")
    common(i)
    i.add_argument("name")
    i.add_argument("--input", default=None, help="JSON input, or - to read it from stdin")
    i.set_defaults(func=_command)

    a = sub.add_parser("ask", help="one question through the router")
    common(a)
    a.add_argument("prompt")
    a.add_argument("--model", default="default", help="model alias (default: default)")
    a.add_argument("--stream", action="store_true", help="print tokens as they come")
    a.set_defaults(func=_command)

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
    tk.set_defaults(func=_command)

    ls = sub.add_parser("list", help="pipelines, triggers and states")
    common(ls)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--offline", action="store_true", help="do not ask a running daemon")
    ls.add_argument("--tools", action="store_true",
                    help="the tools llm steps may use (MCP servers are started to list theirs)")
    ls.set_defaults(func=_command)

    rn = sub.add_parser("runs", help="the running daemon's run log, newest first")
    common(rn)
    rn.add_argument("name", nargs="?", help="only this pipeline's runs")
    rn.add_argument("--status", choices=["ok", "error", "cancelled", "busy", "running",
                                         "interrupted"])
    rn.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    rn.add_argument("--id", help="show one run in full")
    rn.add_argument("--json", action="store_true")
    rn.set_defaults(func=_command)

    h = sub.add_parser("health", help="probe a running daemon's /healthz; exit 0 if healthy")
    h.add_argument("--config", help="harkd.yaml whose server.listen to probe")
    h.add_argument("--url", help="URL to probe (default: /healthz of server.listen)")
    h.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    h.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    h.set_defaults(func=_command)

    pl = sub.add_parser("plugins", help="installed steps and triggers, and plugins that failed")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_command)

    s = sub.add_parser("schema", help="print the generated JSON Schemas")
    s.add_argument("--kind", choices=["pipeline", "harkd"], help="print only one")
    s.add_argument("--builtin", action="store_true",
                   help="only harkd's own kinds (as the repository's schemas/ holds)")
    s.add_argument("--write", metavar="DIR", help="write NAME.schema.json files into DIR")
    s.set_defaults(func=_command)
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


def _command(args: argparse.Namespace) -> int:
    """Run ``args.command``, one of the commands other than run: ``cmd_<name>`` of
    :mod:`harkd.commands`, imported only then (``harkd run`` never needs it)."""
    from . import commands

    func: Callable[[argparse.Namespace], int] = getattr(commands, f"cmd_{args.command}")
    return func(args)


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon, StartupError

    s = load_settings(args, listen=args.listen, state=args.state, log_level=args.log_level,
                      loop=args.loop)
    try:
        factory = loop_factory(s.loop)
    except ImportError:
        print("harkd: server.loop is uvloop, which is not installed (pip install uvloop)",
              file=sys.stderr)
        return EX_CONFIG
    daemon = Daemon(s)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(daemon.serve(_collect_again))
    except StartupError as exc:
        print(f"harkd: {exc}", file=sys.stderr)
        return exc.exit_code


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``server.loop`` names, as a factory for :class:`asyncio.Runner`
    (``None``: asyncio's own). ``auto`` is uvloop when it can be imported: the same
    daemon on libuv runs a gateway call in about a fifth fewer instructions (asyncio's
    loop, its transports and a task per request are in C there). ``uvloop`` raises
    :class:`ImportError` when it is not installed."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))

