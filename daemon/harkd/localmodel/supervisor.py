"""The supervisor of one embedded model: a worker process started on first use.

:class:`LocalModel` runs :mod:`harkd.localmodel.worker` as a child process on a private
loopback port, so a crash or a hang inside llama.cpp cannot take down the daemon. It
starts the worker on the first :meth:`LocalModel.ensure`, checks its health, restarts it
with backoff when it dies, kills and replaces it when it stops answering or one
generation outlives ``request_timeout``, and stops it at shutdown (terminate, then kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ..errors import BackendError
from ..logs import get_logger
from ..records import dataclass
from .models import ModelSpec, check_installed, ensure_gguf, resolve

if TYPE_CHECKING:
    from ..contracts import Services
    from ..settings import Settings

log = get_logger("harkd.localmodel")

_HOST = "127.0.0.1"


def _default_threads() -> int:
    # llama.cpp's worker threads spin at barriers: on a busy machine, as many threads as
    # cores made generation ten times slower here, so leave one core to everything else.
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class Options:
    """How the model runs and how the supervisor watches it. Durations are seconds."""

    n_ctx: int = 2048
    threads: int = _default_threads()
    seed: int = 42
    load_timeout: float = 120.0
    health_interval: float = 2.0
    health_timeout: float = 3.0
    #: consecutive failed health checks that mean the worker hangs
    health_failures: int = 2
    #: one generation running longer than this means the worker hangs
    request_timeout: float = 120.0
    #: delay before the n-th consecutive restart (the last one repeats)
    backoff: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
    #: a worker that lived this long resets the backoff when it dies
    stable_after: float = 60.0
    #: how long a stopping worker gets between SIGTERM and SIGKILL
    term_grace: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Options:
        """Defaults, with ``local.threads`` and ``local.ctx`` applied."""
        options = cls()
        if settings.local_threads > 0:
            options = replace(options, threads=settings.local_threads)
        return replace(options, n_ctx=max(256, settings.local_ctx))


class LocalModel:
    """One embedded model served by a supervised worker process.

    Get it with :meth:`shared`, so every pipeline of a daemon uses one process per model.
    Call :meth:`ensure` before each request: it is cheap once the worker runs and returns
    the current base URL (a restarted worker keeps its port when it can).
    """

    def __init__(self, name: str, state: Path, options: Options | None = None) -> None:
        self.spec: ModelSpec = resolve(name)
        self.state = state
        self.options = options or Options()
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._url: str | None = None
        self._port = 0
        self._lock = asyncio.Lock()
        self._monitor: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = 0
        self._not_before = 0.0
        self._started_at = 0.0
        self._tail: deque[str] = deque(maxlen=20)
        self._pumps: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def shared(cls, services: Services, name: str) -> LocalModel:
        """The one instance of model ``name`` for ``services`` (kept in ``services.shared``)."""
        spec = resolve(name)
        key = f"localmodel:{spec.name}"
        model = services.shared.get(key)
        if not isinstance(model, cls):
            settings = services.settings
            model = cls(spec.name, settings.state, Options.from_settings(settings))
            services.shared[key] = model
        return model

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def url(self) -> str | None:
        """The base URL while the worker runs and answers."""
        return self._url if self.pid is not None else None

    async def ensure(self) -> str:
        """Start the worker unless it runs; return its base URL, ``http://127.0.0.1:PORT``.

        Concurrent first calls start it once. Raises :class:`BackendError` when the model
        or llama.cpp is not installed, or the worker cannot start.
        """
        url = self.url
        if url is not None:
            return url
        async with self._lock:
            if self._closed:
                raise BackendError(f"the local model {self.name!r} is closed")
            if self.url is None:
                await self._start()
            if self._monitor is None:
                self._monitor = asyncio.create_task(self._watch(), name=f"watch-{self.name}")
                self._monitor.add_done_callback(self._watch_done)
            assert self._url is not None
            return self._url

    async def aclose(self) -> None:
        """Stop watching and stop the worker: SIGTERM, then SIGKILL after ``term_grace``."""
        self._closed = True
        monitor = self._monitor
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if self._proc is not None:
            await self._stop(self._proc, self.options.term_grace)
            log.info("local_model_stopped", model=self.name)
        for task in list(self._pumps):
            task.cancel()
        if self._http is not None:
            await self._http.close()

    async def _start(self) -> None:
        """Start a worker and wait until it listens; the caller holds ``_lock``."""
        delay = self._not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        check_installed(self.spec)
        path = await asyncio.to_thread(ensure_gguf, self.spec, self.state)
        ports = [self._port, 0] if self._port else [0]
        for i, port in enumerate(ports):
            try:
                await self._spawn(path, port)
                return
            except BackendError:
                # The old port may have been taken while the worker was down: try any port.
                if i + 1 == len(ports):
                    self._proc = None
                    self._failed()
                    raise

    async def _spawn(self, path: Path, port: int) -> None:
        o = self.options
        began = time.monotonic()
        log.info("local_model_loading", model=self.name, path=str(path), threads=o.threads,
                 n_ctx=o.n_ctx)
        cmd = [sys.executable, "-m", "harkd.localmodel.worker", "--model", str(path),
               "--name", self.name, "--host", _HOST, "--port", str(port),
               "--n-ctx", str(o.n_ctx), "--threads", str(o.threads), "--seed", str(o.seed),
               "--parent-pid", str(os.getpid())]
        self._tail.clear()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=_child_env(), start_new_session=True)
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self._pump(proc.stderr)
        try:
            async with asyncio.timeout(o.load_timeout):
                ready = await self._ready(proc)
        except TimeoutError:
            await self._stop(proc, 0)
            raise BackendError(f"the local model {self.name!r} did not load within "
                               f"{o.load_timeout:g}s") from None
        except BaseException:
            await self._stop(proc, 0)
            raise
        self._pump(proc.stdout)
        self._port = int(ready["port"])
        self._url = f"http://{_HOST}:{self._port}"
        self._started_at = time.monotonic()
        log.info("local_model_ready", model=self.name, url=self._url, pid=proc.pid,
                 load_s=ready.get("load_s"), total_s=round(time.monotonic() - began, 3))

    async def _ready(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("event") == "ready":
                    return message
        code = await proc.wait()
        await asyncio.sleep(0.05)  # let the stderr pump take the last lines
        raise BackendError(f"the local model {self.name!r} exited with {code} while "
                           f"loading: {self._last_output()}")

    def _pump(self, stream: asyncio.StreamReader) -> None:
        async def pump() -> None:
            while line := await stream.readline():
                text = line.decode("utf-8", "replace").rstrip()
                self._tail.append(text)
                log.debug("local_model_output", model=self.name, line=text)

        task = asyncio.create_task(pump())
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    def _last_output(self) -> str:
        return " | ".join(line for line in self._tail if line) or "(no output)"

    def _failed(self) -> None:
        """Count one failed start or crash and push the next start back accordingly."""
        backoff = self.options.backoff
        self._not_before = time.monotonic() + backoff[min(self._failures, len(backoff) - 1)]
        self._failures += 1

    async def _watch(self) -> None:
        """Restart the worker when it exits; kill it when it hangs."""
        unhealthy = 0
        exited: asyncio.Task[int] | None = None
        while not self._closed:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                await self._recover(proc)
                unhealthy, exited = 0, None
                continue
            if exited is None:
                exited = asyncio.create_task(proc.wait())
            await asyncio.wait({exited}, timeout=self.options.health_interval)
            if exited.done():
                continue
            problem = await self._probe()
            unhealthy = unhealthy + 1 if problem else 0
            if problem == "busy" or unhealthy >= self.options.health_failures:
                log.warning("local_model_hung", model=self.name, pid=proc.pid, reason=problem,
                            checks=unhealthy)
                await self._stop(proc, 0)

    def _watch_done(self, task: asyncio.Task[None]) -> None:
        self._monitor = None
        if not task.cancelled() and task.exception() is not None:
            log.error("local_model_watch_failed", model=self.name,
                      error=repr(task.exception()))

    async def _recover(self, dead: asyncio.subprocess.Process | None) -> None:
        if dead is not None:
            self._url = None
            lived = time.monotonic() - self._started_at
            if lived >= self.options.stable_after:
                self._failures = 0
            self._failed()
            await asyncio.sleep(0.05)  # let the stderr pump take the last lines
            log.warning("local_model_exited", model=self.name, pid=dead.pid,
                        returncode=dead.returncode, lived_s=round(lived, 3),
                        restart_in_s=round(max(0.0, self._not_before - time.monotonic()), 3),
                        output=self._last_output())
        async with self._lock:
            if self._closed or self.url is not None:
                return
            try:
                await self._start()
                self.restarts += 1
            except BackendError as exc:
                log.error("local_model_start_failed", model=self.name, error=exc.message)

    async def _probe(self) -> str | None:
        """``None`` when the worker is healthy, else what is wrong with it."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.options.health_timeout)
        try:
            async with self._http.get(f"{self._url}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    return f"status {resp.status}"
                health = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"no answer: {type(exc).__name__}"
        if float(health.get("busy_s", 0)) > self.options.request_timeout:
            return "busy"
        return None

    async def _stop(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        """End ``proc``: close its stdin and SIGTERM it, then SIGKILL after ``grace``."""
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                if grace > 0:
                    proc.terminate()
                else:
                    proc.kill()
            try:
                async with asyncio.timeout(grace or None):
                    await proc.wait()
            except TimeoutError:
                log.warning("local_model_kill", model=self.name, pid=proc.pid, grace_s=grace)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._proc is proc:
            self._url = None


def _child_env() -> dict[str, str]:
    """The environment of the worker, with harkd's source root importable."""
    import harkd

    root = str(Path(harkd.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
