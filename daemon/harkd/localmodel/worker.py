"""The model process: ``python -m harkd.localmodel.worker --model PATH --port N``.

Loads the GGUF with llama.cpp, serves :mod:`harkd.localmodel.server` on loopback, and
prints one JSON line ``{"event": "ready", "port": N, "load_s": S}`` on stdout once it
listens (with ``--port 0`` the system picks the port). It never outlives its parent: it
exits when its stdin reaches end of file (the parent holds the other end, so this happens
however the parent dies) or when its parent pid changes. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Sequence

from aiohttp import web


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harkd.localmodel.worker",
                                description="Serve one GGUF model over an OpenAI-style API.")
    p.add_argument("--model", required=True, help="path of the GGUF file")
    p.add_argument("--name", default="local", help="model name reported by the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process is no longer the parent")
    p.add_argument("--no-stdin-watch", action="store_true",
                   help="do not exit at end of file on stdin (for running it by hand)")
    return p.parse_args(argv)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # A blocking read on a daemon thread: works for pipes, files and terminals alike, and
    # does not keep the process alive.
    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(sys.stdin.fileno(), 1024):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, name="stdin-watch", daemon=True).start()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


async def serve(args: argparse.Namespace) -> None:
    """Load the model, listen, report readiness, and serve until told to stop."""
    from .generate import Generator
    from .server import build_app

    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.no_stdin_watch:
        _watch_stdin(loop, stop)
    watchers = []
    if args.parent_pid is not None:
        watchers.append(asyncio.create_task(_watch_parent(args.parent_pid, stop)))
    sock = _listen(args.host, args.port)
    gen = await loop.run_in_executor(None, lambda: Generator(
        args.model, n_ctx=args.n_ctx, n_threads=args.threads, seed=args.seed))
    runner = web.AppRunner(build_app(gen, args.name), access_log=None,
                           handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    ready = {"event": "ready", "port": sock.getsockname()[1], "pid": os.getpid(),
             "load_s": round(time.monotonic() - started, 3)}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        gen.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await runner.cleanup()
        for task in watchers:
            task.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the worker process."""
    args = parse_args(argv)
    code = 0
    try:
        asyncio.run(serve(args))
    except BaseException:  # noqa: BLE001 - the process boundary: report, then exit non-zero
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Leave without joining the generation thread, which may be inside llama.cpp.
        os._exit(code)


if __name__ == "__main__":
    main()
