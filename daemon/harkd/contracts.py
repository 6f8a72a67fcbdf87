"""The contracts between harkd's layers: what a step, a trigger, a run observer and the
shared services look like to the code that uses them.

Everything here is a :class:`~typing.Protocol` (or the name of a :attr:`Services.shared`
slot two layers agree on), and this module imports nothing of harkd
but plain values (settings, the router's request and response types). That is what lets
the pipeline model, the engine and the parts (steps, triggers, router, voice, tools) name
each other's types without importing each other: the engine runs any :class:`Step`, a
step reaches the router and the catalog through :class:`Services`, and the daemon's
concrete classes (:class:`harkd.services.Services`, :class:`harkd.catalog.Catalog`,
:class:`harkd.router.Router`) satisfy these protocols structurally.

A step is called with the engine's :class:`~harkd.core.run.Run`, and a trigger with
its :class:`~harkd.core.bound.Bound`; the protocols say ``Any`` there because the engine
sits above this module. Implementations annotate the concrete types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    import aiohttp
    from aiohttp import web

    from .router.types import ChatRequest, ChatResponse
    from .settings import Settings


class Step(Protocol):
    """A compiled step: awaited once per run with the previous step's output.

    It returns its output, or a :class:`~harkd.streams.TextStream` to pass chunks on as
    they come. A step whose ``accepts_stream`` attribute is true receives such a stream
    from the step before it instead of the joined text.
    """

    async def __call__(self, run: Any, data: Any) -> Any: ...


class Trigger(Protocol):
    """A compiled trigger.

    ``routes`` are the paths it answers on the shared listener; the daemon calls
    ``handle`` for requests on them. ``serve`` is long-lived work (a cron clock, a
    microphone): it runs from bind until it is cancelled at unbind, and calls
    ``started()`` once it is up. Route-only triggers call ``started()`` and return; one
    that says so with a class attribute ``route_only = True`` is bound without a task of
    its own (its ``serve`` is awaited in place).
    """

    @property
    def kind(self) -> str: ...

    @property
    def routes(self) -> tuple[str, ...]: ...

    def describe(self) -> dict[str, Any]: ...

    async def handle(self, request: web.Request, bound: Any) -> web.StreamResponse: ...

    async def serve(self, bound: Any, started: Callable[[], None]) -> None: ...


class RunObserver(Protocol):
    """Told of every run's start and end (the run log, metrics, the console and traces
    implement this); called with the engine's ``Run`` and ``RunResult``."""

    def run_started(self, run: Any) -> None: ...

    def run_finished(self, run: Any, result: Any) -> None: ...


class ChatStream(Protocol):
    """One streamed LLM call: iterate it for text chunks; ``response`` is set at the end."""

    response: ChatResponse | None

    def __aiter__(self) -> ChatStream: ...

    def __anext__(self) -> Awaitable[str]: ...

    async def aclose(self) -> None: ...

    async def collect(self) -> ChatResponse: ...


class Router(Protocol):
    """The pooled, fallback-aware LLM client that every pipeline shares."""

    async def complete(self, req: ChatRequest) -> ChatResponse: ...

    def stream(self, req: ChatRequest) -> ChatStream: ...

    def report(self) -> dict[str, Any]: ...


class Catalog(Protocol):
    """The loaded pipelines, as steps and triggers see them: by name (the ``pipeline``
    step, pipelines as tools) and by route. Both answer the engine's ``Bound``."""

    def bound(self, name: str) -> Any: ...

    def route(self, path: str) -> Any: ...

    def counts(self) -> dict[str, int]: ...


#: the :attr:`Services.shared` slot of the list every router of a daemon reports its call
#: attempts to (the daemon fills it before the router is first imported)
ROUTER_OBSERVERS = "router_observers"


class Services(Protocol):
    """What steps and triggers share inside one daemon (or one ``harkd invoke``): the
    settings, one pooled HTTP client, the router, the catalog, the run observers, named
    singletons (loaded speech models, the session store) and background tasks."""

    settings: Settings
    observers: list[RunObserver]
    shared: dict[str, Any]
    offline: bool

    @property
    def catalog(self) -> Catalog | None: ...

    @property
    def router(self) -> Router: ...

    def http(self) -> aiohttp.ClientSession: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def check_network(self, what: str) -> None: ...
