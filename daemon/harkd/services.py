"""What steps and triggers share inside one daemon (or one ``harkd invoke``).

One pooled HTTP client session, the LLM router (built on first use, swapped when
``harkd.yaml`` reloads), the catalog of pipelines (for the ``pipeline`` step), the run
observers (run log, metrics) and the background tasks that a shutdown waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .contracts import Catalog, RunObserver
from .core.registry import Registry
from .logs import get_logger
from .settings import Settings

if TYPE_CHECKING:
    import aiohttp

    from .router import Router

log = get_logger("harkd.services")


class Services:
    """Shared resources of one daemon. Create it inside the event loop that uses it."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.observers: list[RunObserver] = []
        self.catalog: Catalog | None = None
        self._http: aiohttp.ClientSession | None = None
        self._router: Router | None = None
        self.background: set[asyncio.Task[Any]] = set()
        #: named singletons shared by steps (loaded speech models, the session store, ...)
        self.shared: dict[str, Any] = {}
        #: ``harkd test`` without ``--live``: steps that would reach the network refuse
        self.offline = False

    def check_network(self, what: str) -> None:
        """Called by a step before it reaches the network (``what``: its request, for the
        message); under ``harkd test`` without ``--live`` it raises StepError instead."""
        if self.offline:
            from .errors import StepError

            raise StepError(f"{what}: tests do not reach the network; name this step "
                            "(`as: NAME`) and give the test `steps: {NAME: OUTPUT}`, or run "
                            "`harkd test --live`")

    def http(self) -> aiohttp.ClientSession:
        """The pooled client session for outgoing HTTP from steps."""
        if self._http is None or self._http.closed:
            import aiohttp  # not at import: harkd test and check need no HTTP client

            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64),
                timeout=aiohttp.ClientTimeout(total=30),
                headers={"User-Agent": "harkd"},
            )
        return self._http

    @property
    def router(self) -> Router:
        """The LLM router, built from the settings' ``models`` on first use."""
        if self._router is None:
            from .router import Router

            self._router = Router.from_settings(self.settings, self)
        return self._router

    async def swap_settings(self, settings: Settings) -> None:
        """Use new settings (a reloaded ``harkd.yaml``): a new router, the old one closed."""
        old = self._router
        self.settings = settings
        self._router = None
        if old is not None:
            from .router import Router

            self._router = Router.from_settings(settings, self)
            self.spawn(old.aclose(grace=30.0))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a background task that shutdown waits for."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def aclose(self, timeout: float = 10.0) -> None:
        if self.background:
            _, pending = await asyncio.wait(list(self.background), timeout=timeout)
            for task in pending:
                task.cancel()
        if self._router is not None:
            await self._router.aclose()
        for value in self.shared.values():
            close = getattr(value, "aclose", None)
            if close is not None:
                await close()
        if self._http is not None:
            await self._http.close()
