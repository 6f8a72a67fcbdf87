"""Programmatic entry points that the CLI and tests share: invoke, ask, list."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from .catalog import Catalog
from .core.registry import default as default_registry
from .core.run import EventSink, RunResult
from .errors import HarkError
from .services import Services
from .settings import Settings

if TYPE_CHECKING:
    from .core.pipeline import Pipeline

T = TypeVar("T")


@contextlib.asynccontextmanager
async def loaded(settings: Settings) -> AsyncIterator[Catalog]:
    """The pipelines folder loaded in-process (no listener), closed afterwards."""
    services = Services(settings, default_registry())
    catalog = Catalog(services, settings.pipelines)
    services.catalog = catalog
    try:
        async with catalog.running():
            try:
                await catalog.scan()
                yield catalog
            finally:
                await catalog.close(settings.shutdown_timeout)
    finally:
        await services.aclose()


async def invoke(settings: Settings, name: str, data: Any = None) -> RunResult:
    """Load the pipelines folder in-process and run ``name`` once (no listener)."""
    async with loaded(settings) as catalog:
        entry = catalog.entries.get(name)
        if entry is None or entry.bound is None:
            known = ", ".join(sorted(catalog.entries)) or "none"
            why = "; ".join(str(e) for e in entry.errors) if entry else f"known: {known}"
            return RunResult("-", "error", error=f"pipeline {name!r} is not loadable ({why})",
                             http_status=404)
        bound = entry.bound
        return await bound.run(bound.new_run(data, {"kind": "invoke"}))


async def ask(settings: Settings, prompt: str, *, model: str = "default",
              stream: bool = False) -> str:
    """One question through the router; with ``stream`` the chunks are printed as they come."""
    from .router import ChatRequest

    services = Services(settings, default_registry())
    try:
        request = ChatRequest(model=model, messages=({"role": "user", "content": prompt},))
        if not stream:
            return (await services.router.complete(request)).text
        parts = []
        async for chunk in services.router.stream(request):
            print(chunk, end="", flush=True)
            parts.append(chunk)
        print()
        return "".join(parts)
    finally:
        await services.aclose()


async def list_pipelines(settings: Settings, *, offline: bool = False
                         ) -> tuple[str, list[dict[str, Any]]]:
    """Pipelines with their states: from the running daemon if one answers, else offline."""
    if not offline:
        host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{settings.port}/api/pipelines"
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        try:
            async with aiohttp.ClientSession() as session, session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                if resp.status == 200:
                    data = json.loads(await resp.text())
                    return f"daemon at {settings.listen}", list(data["pipelines"])
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            pass
    async with loaded(settings) as catalog:
        return f"offline, {settings.pipelines}", [
            catalog.entries[n].describe() for n in sorted(catalog.entries)]


class DaemonUnreachable(HarkError, ConnectionError):
    """No daemon answered at ``server.listen``, or it refused the token. Raised by
    :func:`list_runs` (the run log lives in the daemon)."""


async def list_runs(settings: Settings, *, pipeline: str | None = None,
                    status: str | None = None, limit: int = 20,
                    run_id: str | None = None) -> dict[str, Any]:
    """A page of the running daemon's run log (``GET /api/runs``), or one run."""
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    base = f"http://{host}:{settings.port}/api/runs"
    url = f"{base}/{run_id}" if run_id else base
    query = {k: v for k, v in (("pipeline", pipeline), ("status", status),
                               ("limit", str(limit))) if v is not None and not run_id}
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    try:
        async with aiohttp.ClientSession() as session, session.get(
            url, params=query, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            data: dict[str, Any] = json.loads(await resp.text())
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        raise DaemonUnreachable(f"no harkd answers at {settings.listen} ({exc})") from None
    if resp.status != 200:
        message = (data.get("error") or {}).get("message", f"HTTP {resp.status}")
        raise DaemonUnreachable(f"harkd at {settings.listen}: {message}")
    return data


class Runtime:
    """Services for harkd used as a library: one router and HTTP pool per event loop.

    Blocking calls run on a private event-loop thread, so they work both in plain scripts
    and inside a running loop (a notebook) without deadlocks; async calls use the
    caller's loop.
    """

    def __init__(self, settings: Settings | None = None, *,
                 config: str | os.PathLike[str] | None = None) -> None:
        from . import logs

        if not logs.CONFIGURED:  # a library stays quiet: warnings, to stderr
            logs.configure("warning", "console")
        self._settings = settings
        self._config = config
        self._services: dict[int, Services] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from . import config

            self._settings = config.load(self._config)
        return self._settings

    def services(self) -> Services:
        """The services of the running event loop (created on first use in it)."""
        loop = asyncio.get_running_loop()
        found = self._services.get(id(loop))
        if found is None:
            found = Services(self.settings, default_registry())
            self._services[id(loop)] = found
        return found

    async def run_pipeline(self, pipeline: Pipeline, data: Any = None,
                           emit: EventSink | None = None) -> RunResult:
        from .core.bound import Bound
        from .core.concurrency import Gate

        bound = Bound(pipeline, Gate(pipeline.concurrency), self.services())
        return await bound.run(bound.new_run(data, {"kind": "python"}, emit,
                                             streaming=emit is not None))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion on the runtime's own loop thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._thread_loop()).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator on the runtime's loop thread; yield its items here."""
        out: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in agen:
                    out.put(("item", item))
                out.put(("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                out.put(("error", exc))

        asyncio.run_coroutine_threadsafe(pump(), self._thread_loop())
        while True:
            kind, value = out.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def _thread_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="harkd-runtime",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    async def aclose(self) -> None:
        """Close the services of the running loop."""
        loop = asyncio.get_running_loop()
        services = self._services.pop(id(loop), None)
        if services is not None:
            await services.aclose()

    def close(self) -> None:
        """Close everything, the private loop too (blocking)."""
        if self._loop is not None:
            self.call(self.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None


_DEFAULT: Runtime | None = None


def default_runtime() -> Runtime:
    """The process-wide runtime, configured from ``harkd.yaml`` as the daemon would be."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Runtime()
    return _DEFAULT
