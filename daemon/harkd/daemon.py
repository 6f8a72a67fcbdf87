"""The daemon's lifecycle in one place: start, load, watch, serve, reload, shut down.

:meth:`Daemon.serve` starts the listener, loads every pipeline, reports ready (``/readyz``,
systemd), then watches the folder and ``harkd.yaml`` until it is told to stop; then it
stops accepting, lets runs finish within ``shutdown_timeout`` and closes everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskGroup, TaskStatus

from . import __version__, config
from .catalog import Catalog
from .contracts import ROUTER_OBSERVERS
from .core.registry import Registry
from .core.registry import default as default_registry
from .errors import ConfigErrors, HarkError, first_error
from .http import api
from .http.host import HOST
from .logs import get_logger
from .notify import Notifier
from .runlog import RunLog
from .services import Services
from .settings import Settings
from .triggers.http import error_response

log = get_logger("harkd.daemon")

EX_OK, EX_USAGE, EX_NOINPUT, EX_UNAVAILABLE, EX_SOFTWARE, EX_CONFIG = 0, 64, 66, 69, 70, 78
EX_CANTCREAT = 73


class StartupError(HarkError, OSError):
    """The daemon cannot start (port in use, unreadable folder). Raised by :meth:`serve`;
    ``exit_code`` is the sysexits code the CLI exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# aiohttp keys for the objects handlers need
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")


class Daemon:
    """One harkd: its settings, services, catalog and listener."""

    def __init__(self, settings: Settings, registry: Registry | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.registry = registry or default_registry()
        self.environ = environ
        self.services = Services(settings, self.registry)
        self.catalog = Catalog(self.services, settings.pipelines)
        self.services.catalog = self.catalog
        self.notifier = Notifier()
        self.ready = False
        self.stop_event = asyncio.Event()
        self._signals = True  # serve(signals=False) leaves the loop's signals alone
        self.address: tuple[str, int] | None = None
        #: what serve() returns: 0, or 70 when a component failed while running
        self.exit_code = EX_OK
        #: functions that add routes to the app (admin API, gateway, metrics)
        self.extensions: list[Callable[[web.Application, Daemon], None]] = []
        from .metrics import Metrics

        self.metrics = Metrics(self.services, self.catalog)
        self.services.observers.append(self.metrics)
        self.catalog.listeners.append(self.metrics.pipeline_changed)
        # The list router.router_observers() returns, filled without importing the router
        # (10 ms of start): it loads with the first LLM call.
        self.services.shared.setdefault(ROUTER_OBSERVERS, []).append(
            self.metrics.observe_llm_call)
        #: the SQLite run log, opened by serve()
        self.runlog: RunLog | None = None

    # -- the app ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body)
        app[DAEMON] = self
        app[HOST] = self
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", _readyz)
        from . import console
        from .http import gateway

        api.setup(app, self)
        gateway.setup(app, self)
        console.setup(app, self)
        from .http import mcp_server

        mcp_server.setup(app, self)
        if self.settings.extra.get("telemetry"):  # else setup does nothing: not imported
            from . import telemetry

            telemetry.setup(app, self)
        app.router.add_get("/metrics", self.metrics.handle)
        app.on_shutdown.append(_close_websockets)
        for extend in self.extensions:
            extend(app, self)
        api.guard(app, self)  # server.token, in front of every route so far
        # Trigger routes change on every reload, so one catch-all looks them up per request.
        app.router.add_route("*", "/{tail:.*}", _dispatch)
        return app

    # -- lifecycle -------------------------------------------------------------------

    async def serve(self, started: Callable[[tuple[str, int]], None] | None = None, *,
                    signals: bool = True) -> int:
        """Run until stopped; returns the exit code. ``started`` gets the bound address
        once the listener is up and the first load is done. With ``signals``, SIGTERM and
        SIGINT stop the daemon and SIGHUP reloads it; a daemon run inside another program's
        loop (``harkd.testing.run_daemon``) leaves that program's signals alone."""
        s = self.settings
        self._signals = signals
        if not s.loopback and not s.token:
            raise StartupError(f"refusing to listen on {s.listen} (off loopback) without "
                               "server.token; set HARKD_TOKEN", EX_CONFIG)
        folder = s.pipelines
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.listdir(folder)
        except OSError as exc:
            raise StartupError(f"cannot read pipelines folder {folder}: {exc.strerror}",
                               EX_NOINPUT) from None
        from . import state

        try:
            root = state.prepare(s.state)
        except state.StateError as exc:
            raise StartupError(str(exc), EX_CANTCREAT) from None
        from .core.doccache import DocCache

        self.registry.scan(root / "cache" / "entry-points")  # if nothing has looked yet
        self.catalog.cache = DocCache.open(root / "cache" / "pipelines", self.registry)

        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None,
                               shutdown_timeout=s.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            # asyncio wraps the bind error in a long sentence; the errno says it plainly.
            reason = os.strerror(exc.errno) if exc.errno else exc.strerror
            raise StartupError(f"cannot listen on {s.listen}: {reason}",
                               EX_UNAVAILABLE) from None
        from . import runlog as runlog_mod

        try:
            self.runlog = runlog_mod.open_for(s)
        except HarkError as exc:
            await runner.cleanup()
            raise StartupError(str(exc), EX_CANTCREAT) from None
        self.services.observers.append(self.runlog)
        drained = False
        try:
            async with self.catalog.running(), anyio.create_task_group() as group:
                try:
                    await self._run(group, site, started)
                finally:
                    # Shutdown has one path, however serving ended: stop accepting, drain
                    # the runs, then stop every component.
                    log.info("daemon_stopping", timeout=s.shutdown_timeout)
                    self.notifier.stopping()
                    group.cancel_scope.cancel()  # the watcher, the watchdog
                    with anyio.CancelScope(shield=True):
                        await site.stop()  # stop accepting; in-flight requests go on
                        drained = await self.catalog.close(s.shutdown_timeout)
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None  # the StartupError, not a group of one
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
                await self.services.aclose(timeout=s.shutdown_timeout)
                if self.runlog is not None:
                    await self.runlog.aclose()
            self._remove_signals()
            self.notifier.close()
        log.info("daemon_stopped", drained=drained)
        return self.exit_code

    async def _run(self, group: TaskGroup, site: web.TCPSite,
                   started: Callable[[tuple[str, int]], None] | None) -> None:
        """Start the components in ``group``, load every pipeline, report ready, and wait
        until told to stop. A component that fails to start raises :class:`StartupError`;
        one that fails later is logged and stops the daemon (exit 70)."""
        s = self.settings
        await self._join_cluster()
        sockets = getattr(site._server, "sockets", None) or []
        self.address = sockets[0].getsockname()[:2] if sockets else (s.host, s.port)
        self._install_signals()
        t0 = time.perf_counter()
        # Watching before loading, so no edit falls between the two.
        await self._component(group, "watcher", self._watch)
        await self.catalog.scan()
        self.ready = True
        log.info("daemon_ready", listen=f"{self.address[0]}:{self.address[1]}",
                 pipelines=self.catalog.summary(), version=__version__,
                 loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
                 load_ms=round((time.perf_counter() - t0) * 1000, 1),
                 cached=self.catalog.cache.hits if self.catalog.cache else 0)
        self.notifier.ready(self.catalog.summary())
        self.catalog.listeners.append(lambda _e, _w: self.notifier.status(self.catalog.summary()))
        if started is not None:
            started(self.address)
        await self._component(group, "watchdog", self._watchdog)
        await self.stop_event.wait()

    async def _component(self, group: TaskGroup, name: str,
                         fn: Callable[..., Awaitable[None]]) -> None:
        """Start one long-lived part of the daemon in ``group`` and wait for its
        ``task_status.started()``. Its failure is reported by name: before it started as a
        StartupError, after it as ``component_failed`` and a stop with exit code 70."""

        async def supervised(*, task_status: TaskStatus[None]) -> None:
            running = False

            def ready() -> None:
                nonlocal running
                running = True
                task_status.started()

            try:
                await fn(ready)
            except Exception as exc:
                if not running:
                    raise
                log.error("component_failed", component=name,
                          error=f"{type(exc).__name__}: {exc}")
                self.exit_code = EX_SOFTWARE
                self.stop()

        try:
            await group.start(supervised)
        except Exception as exc:  # noqa: BLE001 - reported as the daemon's startup error
            raise StartupError(f"{name} failed to start: {type(exc).__name__}: {exc}",
                               EX_SOFTWARE) from None

    def stop(self) -> None:
        self.stop_event.set()

    async def _join_cluster(self) -> None:
        """With ``cluster:`` in ``harkd.yaml``: connect to Redis (a replica whose Redis
        is down starts on local state) and put the replica id in runs and metrics."""
        if not self.settings.extra.get("cluster"):
            return  # cluster.config would say None: the package is not imported
        from . import cluster

        conf = cluster.config(self.settings.extra, self.settings.listen)
        if conf is None:
            return
        from .cluster.link import Collector, start
        from .cluster.sessions import install

        link = await start(self.services, conf)
        install(self.services, link)
        self.metrics.registry.register(Collector(link))
        if self.runlog is not None:
            self.runlog.replica = link.replica

    async def reload(self) -> None:
        """Rescan everything (SIGHUP, ``POST /api/reload``): config first, then files."""
        self.notifier.reloading()
        try:
            await self._reload_config()
            await self.catalog.scan()
        finally:
            self.notifier.ready(self.catalog.summary())
        log.info("daemon_reloaded", pipelines=self.catalog.summary())

    async def _reload_config(self) -> None:
        path = self.settings.config_file
        if path is None:
            return
        try:
            new = config.load(path, _overrides(self.settings), self.environ)
        except ConfigErrors as exc:
            for err in exc.errors:
                log.error("config_invalid", error=str(err))
            return
        self.settings = new
        await self.services.swap_settings(new)
        log.info("config_reloaded", file=str(path))

    async def _watch(self, live: Callable[[], None]) -> None:
        """Apply file changes until stopped; ``live()`` is called once inotify watches the
        folder, so that the first load cannot miss an edit made right after it."""
        import watchfiles

        folder = self.settings.pipelines.resolve()
        paths: list[Path] = [folder]
        config = self.settings.config_file.resolve() if self.settings.config_file else None
        if config is not None and config.parent != folder:
            paths.append(config.parent)
        batches = watchfiles.awatch(*paths, watch_filter=None, debounce=400, step=15,
                                    recursive=False, stop_event=self.stop_event)
        # awatch sets up its watches synchronously, up to its first wait for changes.
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0)
        live()
        while True:
            try:
                changes = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(batches))
            changed = {Path(p) for _, p in changes}
            try:
                if config is not None and config in changed:
                    self.notifier.reloading()
                    await self._reload_config()
                    self.notifier.ready(self.catalog.summary())
                await self.catalog.changed(p for p in changed if p.parent == folder)
            except Exception:
                log.exception("reload_failed")

    async def _watchdog(self, started: Callable[[], None]) -> None:
        started()
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _install_signals(self) -> None:
        if not self._signals:
            return
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests running a daemon in a thread)

    def _remove_signals(self) -> None:
        if not self._signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _on_stop_signal(self) -> None:
        if self.stop_event.is_set():
            log.warning("daemon_exit_now")
            os._exit(1)
        self.stop()

    def _on_hup(self) -> None:
        self.services.spawn(self.reload())


def _overrides(s: Settings) -> dict[str, Any]:
    """What a reload of ``harkd.yaml`` keeps: the listener, the loop and the folders need a
    restart."""
    return {"listen": s.listen, "loop": s.loop, "pipelines": s.pipelines, "state": s.state}


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    if not daemon.ready:
        return web.json_response({"status": "loading"}, status=503)
    body: dict[str, Any] = {"status": "ready", "pipelines": daemon.catalog.counts()}
    from .cluster import of as cluster_of

    link = cluster_of(daemon.services)
    if link is not None:
        body["cluster"] = link.detail()  # ready on local state too: the detail says so
    return web.json_response(body)


async def _close_websockets(app: web.Application) -> None:
    from .triggers.websocket import Connections

    await Connections.of(app[DAEMON].services).close_all()


async def _dispatch(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    if daemon.settings.token:  # (a webhook is not guarded; /api/nothing-here is)
        refused = api.refusal(daemon, request)
        if refused is not None:
            return refused
    bound = daemon.catalog.route(request.path)
    if bound is None:
        return error_response(404, f"no pipeline serves {request.path}")
    return await bound.pipeline.trigger.handle(request, bound)
