"""What the HTTP surfaces see of the daemon, and the app key it is stored under.

The API, the gateway, the MCP server, the console and telemetry receive a :class:`Host`
(the :class:`~harkd.daemon.Daemon` satisfies it) instead of importing the daemon, so the
daemon can import them without a circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    import asyncio

    from ..catalog import Catalog
    from ..runlog import RunLog
    from ..services import Services
    from ..settings import Settings


class Host(Protocol):
    """The daemon as its HTTP surfaces use it: settings, catalog, services, run log."""

    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def services(self) -> Services: ...

    @property
    def runlog(self) -> RunLog | None: ...

    @property
    def stop_event(self) -> asyncio.Event: ...

    async def reload(self) -> None: ...


#: the application's :class:`Host` (set by ``Daemon.app``)
HOST: web.AppKey[Host] = web.AppKey("host")
