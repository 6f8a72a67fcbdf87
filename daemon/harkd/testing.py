"""Helpers for testing harkd and pipelines: a real daemon in a temporary folder.

``run_daemon`` starts a :class:`~harkd.daemon.Daemon` in the current event loop on a free
loopback port; ``spawn_daemon`` starts ``harkd run`` as a child process (for signals and
the command line). Both use real files, a real listener and real reloads::

    async with run_daemon(tmp_path) as d:
        await d.write("echo", "trigger: {http: {}}\\nsteps: [{template: hi}]\\n")
        async with d.http.post(d.url("/hooks/echo")) as resp:
            assert await resp.text() == "hi"
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

import aiohttp

from .core.registry import StepKind, TriggerKind
from .daemon import Daemon
from .logs import capture
from .records import dataclass
from .settings import Settings

__all__ = ["DaemonHandle", "Spawned", "capture_logs", "free_port", "run_daemon",
           "serve_app", "spawn_daemon", "wait_until"]


#: log lines as dicts instead of written (:func:`harkd.logs.capture`)
capture_logs = capture


@contextlib.contextmanager
def registered(kind: StepKind | TriggerKind) -> Iterator[None]:
    """Add a step or trigger kind to the default registry for the duration of a test
    (a test-only kind, or your plugin's before it is installed), then take it out."""
    from .core import validate
    from .core.registry import default

    reg = default()
    reg.add(kind, origin="tests")
    validate._PIPELINE.clear()  # the validator is built from the registry; build it anew
    try:
        yield
    finally:
        if isinstance(kind, StepKind):
            reg.steps.pop(kind.name, None)
        else:
            reg.triggers.pop(kind.name, None)
        validate._PIPELINE.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` (sync or async) until it is true; raise TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def serve_app(routes: Mapping[str, Any], method: str = "*") -> AsyncIterator[str]:
    """Serve ``{path: handler}`` on a free loopback port (a scripted peer for a test:
    a slow endpoint, a failing one); yields its base URL. Handlers still running at the
    end are cancelled rather than waited for."""
    from aiohttp import web

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else 0
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class DaemonHandle:
    """A running in-process daemon, its folder and an HTTP client for it."""

    daemon: Daemon
    folder: Path
    base: str
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base + path

    def ws_url(self, path: str) -> str:
        return "ws" + self.base.removeprefix("http") + path

    def path(self, name: str) -> Path:
        return self.folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")

    async def write(self, name: str, text: str, *, wait: bool = True) -> None:
        """Write a pipeline file and, unless ``wait`` is false, wait until the daemon
        has applied it (its version changed, or its errors did)."""
        entry = self.daemon.catalog.entries.get(Path(name).stem)
        before = (entry.version, entry.errors, entry.state) if entry else None
        self.path(name).write_text(text)
        if wait:
            await wait_until(lambda: self._changed(Path(name).stem, before))

    def _changed(self, name: str, before: Any) -> bool:
        entry = self.daemon.catalog.entries.get(name)
        if entry is None:
            return False
        return before is None or (entry.version, entry.errors, entry.state) != before

    async def remove(self, name: str) -> None:
        self.path(name).unlink()
        await wait_until(lambda: Path(name).stem not in self.daemon.catalog.entries)

    def state(self, name: str) -> str | None:
        entry = self.daemon.catalog.entries.get(name)
        return entry.state if entry else None


@contextlib.asynccontextmanager
async def run_daemon(
    root: Path,
    files: Mapping[str, str] | None = None,
    *,
    config: str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[DaemonHandle]:
    """Run a daemon whose pipelines folder is ``root/pipelines`` (created, with ``files``
    written first) and whose state is ``root/state``, on a free loopback port."""
    from . import config as config_mod

    folder = root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")).write_text(text)
    cfg = None
    if config is not None:
        cfg = root / "harkd.yaml"
        cfg.write_text(config)
    values: dict[str, Any] = {"listen": f"127.0.0.1:{free_port()}", "pipelines": folder,
                              "state": root / "state", "shutdown_timeout": 5.0, **overrides}
    env = dict(os.environ if environ is None else environ)
    if cfg is None:
        settings = Settings(**{k: v for k, v in values.items()
                               if k in Settings.__dataclass_fields__})
    else:
        settings = config_mod.load(cfg, values, env)
    daemon = Daemon(settings, environ=env)
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    # pytest's own Ctrl-C must stay pytest's: the daemon installs no signal handlers
    task = asyncio.create_task(daemon.serve(started.set_result, signals=False))
    waiting: set[asyncio.Future[Any]] = {task, started}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the startup error
    host, port = started.result()
    try:
        async with aiohttp.ClientSession() as http:
            yield DaemonHandle(daemon, folder, f"http://{host}:{port}", http)
    finally:
        daemon.stop()
        await task


@dataclass
class Spawned:
    """A ``harkd run`` child process."""

    proc: subprocess.Popen[str]
    base: str
    folder: Path
    log: Path
    lines: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def spawn_daemon(
    root: Path,
    files: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    ready: bool = True,
    timeout: float = 30.0,
) -> Iterator[Spawned]:
    """Start ``python -m harkd run`` on a free port in ``root``; stop it afterwards."""
    import urllib.request

    folder = root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (folder / f"{name}.yaml").write_text(text)
    port = free_port()
    log = root / "harkd.log"
    child_env = {**os.environ, "HARKD_STATE": str(root / "state"), **(env or {})}
    child_env.pop("HARKD_CONFIG", None)
    cmd = [sys.executable, "-m", "harkd", "run", "--pipelines", str(folder),
           "--listen", f"127.0.0.1:{port}", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=child_env, cwd=root)
    spawned = Spawned(proc, f"http://127.0.0.1:{port}", folder, log)
    try:
        if ready:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"harkd exited with {proc.returncode}:\n"
                                       + spawned.output())
                try:
                    with urllib.request.urlopen(spawned.url("/readyz"), timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("harkd did not become ready:\n" + spawned.output())
                time.sleep(0.05)
        yield spawned
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
