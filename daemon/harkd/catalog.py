"""The catalog of loaded pipelines and the reload semantics of DESIGN.md.

Per file: load (read, parse, validate, compile), check routes, bind the trigger, then swap
one reference. An invalid edit never replaces a working version (``stale``); a new invalid
file is ``rejected``. A route claimed twice rejects the second file, naming the first. Work
is per file: reloading one of 1,000 files touches that one only.

Long-lived triggers (a cron clock, a microphone, a satellite) run in the task group that
:meth:`Catalog.running` opens, each started with ``TaskGroup.start()`` under a cancel
scope of its own: binding waits for the trigger's ``started()``, a trigger that fails
before it is rejected with its error and leaves no task behind, and one that fails later
is logged (``trigger_failed``) without touching the other pipelines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .core.bound import Bound
from .core.concurrency import Gate
from .core.doccache import DocCache
from .core.loader import Loaded, digest, discover, load_file, pipeline_name
from .errors import ConfigError, HarkError
from .logs import get_logger
from .records import dataclass
from .services import Services
from .settings import Settings, build_settings

log = get_logger("harkd.catalog")

State = Literal["active", "stale", "rejected"]
RESERVED = ("/api", "/v1", "/healthz", "/readyz", "/metrics", "/ui", "/mcp", "/")
_UNDER_RESERVED = tuple(r + "/" for r in RESERVED)
BIND_TIMEOUT = 30.0
#: a file whose time is older than this when read again was not written while being read
SETTLED_NS = 2_000_000_000


@dataclass(eq=False)
class Serving:
    """A long-lived trigger running in the catalog's task group."""

    pipeline: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)

    async def stop(self) -> None:
        """Cancel the trigger and wait until it has ended."""
        self.scope.cancel()
        await self.done.wait()


class TriggerEnded(HarkError, RuntimeError):
    """A trigger's ``serve`` returned without calling ``started()``. Raised by the catalog
    while binding."""


@dataclass(eq=False)
class Entry:
    """One pipeline name: the version serving now (if any) and the state of its file."""

    name: str
    file: str
    state: State
    bound: Bound | None = None
    errors: tuple[ConfigError, ...] = ()
    version: int = 0
    loaded_at: float = 0.0
    digest: str = ""
    task: Serving | None = field(default=None, repr=False)
    gate: Gate | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        pipeline = self.bound.pipeline if self.bound else None
        return {
            "name": self.name,
            "file": self.file,
            "state": self.state,
            "description": pipeline.description if pipeline else "",
            "trigger": pipeline.trigger.describe() if pipeline else None,
            "version": self.version,
            "loaded_at": self.loaded_at,
            "errors": [e.as_dict() for e in self.errors],
        }


class Catalog:
    """Pipelines by name and the routes they claim on the listener."""

    def __init__(self, services: Services, folder: Path) -> None:
        self.services = services
        self.folder = folder
        self.entries: dict[str, Entry] = {}
        self.routes: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[Entry, str], None]] = []
        self._group: TaskGroup | None = None
        #: validated documents from earlier starts (the daemon opens it in the state
        #: folder); saved after a scan, and a second after the last change otherwise
        self.cache: DocCache | None = None
        self._save_later: asyncio.TimerHandle | None = None
        #: what builders read of the daemon's settings, made once per Settings object
        self._built: tuple[Settings, dict[str, Any]] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Catalog]:
        """The task group that long-lived triggers run in; leaving it stops them all."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield self
            finally:
                self._group = None
                group.cancel_scope.cancel()

    # -- lookups ---------------------------------------------------------------------

    def route(self, path: str) -> Bound | None:
        name = self.routes.get(path)
        entry = self.entries.get(name) if name else None
        return entry.bound if entry else None

    def bound(self, name: str) -> Bound | None:
        entry = self.entries.get(name)
        return entry.bound if entry else None

    def counts(self) -> dict[str, int]:
        out = {"active": 0, "stale": 0, "rejected": 0}
        for e in self.entries.values():
            out[e.state] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return f"{c['active']} active, {c['stale']} stale, {c['rejected']} rejected"

    # -- changes ---------------------------------------------------------------------

    async def scan(self) -> None:
        """Load every file in the folder and drop pipelines whose file is gone."""
        files = discover(self.folder)
        present = {str(p) for p in files}
        for entry in list(self.entries.values()):
            if entry.file not in present:
                await self.remove(entry.file)
        for path in files:
            await self.sync(path)
        # Written just after (a start reports ready first): it only speeds up the next start.
        self._save_soon(0.0)

    async def changed(self, paths: Iterable[str | Path]) -> None:
        """Apply file system changes: each path was added, modified or deleted."""
        for p in sorted({str(x) for x in paths}):
            if pipeline_name(p) is None or Path(p).parent.resolve() != self.folder.resolve():
                continue
            if Path(p).is_file():
                await self.sync(Path(p))
            else:
                await self.remove(p)
        self._save_soon(1.0)  # off the reload's path: one write a second after a burst

    def _save_soon(self, delay: float) -> None:
        if self.cache is not None and self.cache.dirty and self._save_later is None:
            self._save_later = asyncio.get_running_loop().call_later(delay, self.save_cache)

    def save_cache(self) -> None:
        """Write the document cache if it changed (a scan, a reload, closing)."""
        if self._save_later is not None:
            self._save_later.cancel()
            self._save_later = None
        if self.cache is not None:
            self.cache.save()

    async def sync(self, path: Path) -> Entry | None:
        """(Re)load one file and apply the outcome."""
        loaded = await self._settled_load(path)
        async with self._lock:
            return await self._apply(loaded)

    async def _settled_load(self, path: Path) -> Loaded:
        """Load a file; if it fails while it is still being written, wait and load again."""
        settings = self._builder_settings()
        for _ in range(5):
            before = _stamp(path)
            loaded = load_file(path, registry=self.services.registry, settings=settings,
                               cache=self.cache)
            if loaded.pipeline is not None:
                # Written again while we read it? File times are coarse (a few ms) and an
                # edit may keep the size, so compare the bytes; the event of that write
                # may already be behind us. A file last written well before the read
                # (every file at start) would have a new time: its stamp is enough.
                after = _stamp(path)
                if after is not None and after == before and \
                        time.time_ns() - after[0] > SETTLED_NS:
                    return loaded
                if _digest(path) == loaded.digest:
                    return loaded
                continue
            await asyncio.sleep(0.03)
            if _stamp(path) == before:
                return loaded
        return loaded

    def _builder_settings(self) -> dict[str, Any]:
        """:func:`~harkd.settings.build_settings` of the daemon's settings (read-only for
        builders), made again only when they change: a start asks once a file."""
        current = self.services.settings
        if self._built is None or self._built[0] is not current:
            self._built = (current, build_settings(current))
        return self._built[1]

    async def _apply(self, loaded: Loaded) -> Entry | None:
        name = loaded.name
        entry = self.entries.get(name)
        if entry is not None and entry.file != loaded.file:
            if Path(entry.file).exists():
                log.warning("pipeline_name_taken", file=loaded.file, other=entry.file)
                return None
            await self._remove_entry(entry)
            entry = None
        if entry is not None and entry.digest == loaded.digest and entry.state != "rejected":
            return entry  # touched, not changed
        if entry is None:
            # Listed only once its first outcome is known (a slow trigger may take a while
            # to bind), so nobody sees a new file as rejected while it is still binding.
            entry = Entry(name, loaded.file, "rejected")
        entry.digest = loaded.digest

        errors = list(loaded.errors)
        if loaded.pipeline is not None:
            errors += self._route_errors(loaded)
        if not errors:
            assert loaded.pipeline is not None
            errors = await self._bind(entry, loaded)
        self.entries[name] = entry
        if errors:
            entry.errors = tuple(errors)
            entry.state = "stale" if entry.bound is not None else "rejected"
            for err in errors:
                log.warning("pipeline_invalid", pipeline=name, state=entry.state, error=str(err))
            self._notify(entry, entry.state)
        return entry

    def _route_errors(self, loaded: Loaded) -> list[ConfigError]:
        assert loaded.pipeline is not None
        trigger = loaded.pipeline.trigger
        errors = []
        for route in trigger.routes:
            owner = self.routes.get(route)
            if route in RESERVED or route.startswith(_UNDER_RESERVED):
                message = f"route {route} is reserved for harkd itself"
            elif owner is not None and owner != loaded.name:
                message = (f"route {route} is already served by pipeline {owner!r} "
                           f"({self.entries[owner].file})")
            else:
                continue
            errors.append(ConfigError(message, loaded.at("/trigger")))
        return errors

    async def _bind(self, entry: Entry, loaded: Loaded) -> list[ConfigError]:
        assert loaded.pipeline is not None
        version = entry.version + 1
        pipeline = dataclasses.replace(loaded.pipeline, version=version, loaded_at=time.time())
        gate = entry.gate
        if gate is None or gate.spec != pipeline.concurrency:
            gate = Gate(pipeline.concurrency)
        bound = Bound(pipeline, gate, self.services)

        # A long-lived trigger of the old version (a mic, a clock) is stopped first: the new
        # one may need the same device. Its in-flight runs go on regardless.
        await _stop(entry.task)
        entry.task = None
        try:
            entry.task = await self._start(bound)
        except Exception as exc:  # noqa: BLE001 - any failure to start rejects this file only
            error = f"trigger did not start within {BIND_TIMEOUT:g}s" \
                if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            if entry.bound is not None:  # put the old version's long-lived trigger back
                with contextlib.suppress(Exception):
                    entry.task = await self._start(entry.bound)
            return [ConfigError(f"cannot bind trigger: {error}", loaded.at("/trigger"))]

        old = entry.bound
        for route in old.pipeline.trigger.routes if old else ():
            if self.routes.get(route) == entry.name:
                del self.routes[route]
        for route in pipeline.trigger.routes:
            self.routes[route] = entry.name
        self.entries[entry.name] = entry
        entry.bound, entry.gate, entry.version = bound, gate, version
        entry.state, entry.errors, entry.loaded_at = "active", (), pipeline.loaded_at
        entry.file = loaded.file
        log.info("pipeline_loaded", pipeline=entry.name, version=version,
                 trigger=pipeline.trigger.kind)
        self._notify(entry, "active")
        if old is not None:
            self.services.spawn(old.drain(self.services.settings.shutdown_timeout))
        return []

    async def remove(self, file: str) -> None:
        async with self._lock:
            name = Path(file).stem
            entry = self.entries.get(name)
            if entry is not None and entry.file == file:
                await self._remove_entry(entry)
        await self._retry_blocked()

    async def _remove_entry(self, entry: Entry) -> None:
        del self.entries[entry.name]
        for route, owner in list(self.routes.items()):
            if owner == entry.name:
                del self.routes[route]
        await _stop(entry.task)
        if entry.bound is not None:
            self.services.spawn(entry.bound.drain(self.services.settings.shutdown_timeout))
        log.info("pipeline_removed", pipeline=entry.name)
        self._notify(entry, "removed")

    async def _retry_blocked(self) -> None:
        """A freed route may unblock a file that was rejected for claiming it."""
        for entry in list(self.entries.values()):
            if any("already served by" in e.message for e in entry.errors):
                entry.digest = ""
                await self.sync(Path(entry.file))

    async def _start(self, bound: Bound) -> Serving | None:
        if self._group is None:
            raise RuntimeError("the catalog binds triggers only inside Catalog.running()")
        trigger = bound.pipeline.trigger
        if getattr(trigger, "route_only", False):
            # Nothing long-lived to run: a task each was 80 us of binding a webhook.
            started = False

            def ready() -> None:
                nonlocal started
                started = True

            await trigger.serve(bound, ready)
            if not started:
                raise TriggerEnded("the trigger ended without starting")
            return None
        with anyio.fail_after(BIND_TIMEOUT):
            serving: Serving = await self._group.start(_serve, bound)
        return serving

    async def close(self, timeout: float) -> bool:
        """Stop every long-lived trigger, then wait for in-flight runs."""
        self.save_cache()
        for entry in self.entries.values():
            await _stop(entry.task)
            entry.task = None
        bounds = [e.bound for e in self.entries.values() if e.bound is not None]
        results = await asyncio.gather(*(b.drain(timeout) for b in bounds))
        return all(results)

    def _notify(self, entry: Entry, what: str) -> None:
        for fn in self.listeners:
            fn(entry, what)


def _digest(path: Path) -> str | None:
    try:
        return digest(path.read_bytes())
    except OSError:
        return None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def _serve(bound: Bound, *, task_status: TaskStatus[Serving]) -> None:
    """Run one trigger; report ``started()`` through ``task_status``. A failure before it
    is raised to the binder; a failure after it is logged and ends this trigger only."""
    serving = Serving(bound.name)
    started = False

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started(serving)

    try:
        with serving.scope:
            await bound.pipeline.trigger.serve(bound, ready)
            if not started:
                raise TriggerEnded("the trigger ended without starting")
    except Exception as exc:
        if not started:
            raise
        log.error("trigger_failed", pipeline=bound.name,
                  error=f"{type(exc).__name__}: {exc}")
    finally:
        serving.done.set()


async def _stop(serving: Serving | None) -> None:
    if serving is not None:
        await serving.stop()
