"""A scripted stand-in for Home Assistant's REST API, for testing the Home Assistant tools
(and pipelines that use them) without a Home Assistant.

It implements what the tools use: ``GET /api/states``, ``GET /api/states/{entity_id}``
and ``POST /api/services/{domain}/{service}`` (``turn_on``/``turn_off`` change the
state), checks the bearer token (401 otherwise), records the service calls, and with
``hang = True`` never answers (for timeouts)::

    fake = ScriptedHomeAssistant(token="t")
    async with fake.serve() as url:
        ...  # homeassistant: {url: URL, token: t}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import field
from typing import Any

from aiohttp import web

from .records import dataclass
from .testing import serve_app

__all__ = ["ScriptedHomeAssistant"]


def _default_states() -> dict[str, dict[str, Any]]:
    return {
        "light.kitchen": {"entity_id": "light.kitchen", "state": "off",
                          "attributes": {"friendly_name": "Kitchen light"}},
        "sensor.outside": {"entity_id": "sensor.outside", "state": "12.5",
                           "attributes": {"friendly_name": "Outside",
                                          "unit_of_measurement": "°C"}},
        "lock.front_door": {"entity_id": "lock.front_door", "state": "locked",
                            "attributes": {"friendly_name": "Front door"}},
    }


@dataclass
class ScriptedHomeAssistant:
    """A scripted stand-in for Home Assistant's REST API: /api/states,
    /api/states/{id} and /api/services/{domain}/{service}, bearer-token checked."""

    token: str = "scripted-token"
    states: dict[str, dict[str, Any]] = field(default_factory=_default_states)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    hang: bool = False

    def _auth(self, request: web.Request) -> None:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise web.HTTPUnauthorized(text="401: Unauthorized")

    async def _maybe_hang(self) -> None:
        if self.hang:
            await asyncio.sleep(30)

    async def all_states(self, request: web.Request) -> web.Response:
        self._auth(request)
        await self._maybe_hang()
        return web.json_response(list(self.states.values()))

    async def one_state(self, request: web.Request) -> web.Response:
        self._auth(request)
        await self._maybe_hang()
        state = self.states.get(request.match_info["entity"])
        if state is None:
            raise web.HTTPNotFound(text='{"message": "Entity not found."}')
        return web.json_response(state)

    async def service(self, request: web.Request) -> web.Response:
        self._auth(request)
        await self._maybe_hang()
        domain, service = request.match_info["domain"], request.match_info["service"]
        body = await request.json()
        self.calls.append((domain, service, body))
        entity = self.states[body["entity_id"]]
        if service in ("turn_on", "turn_off"):
            entity["state"] = service.removeprefix("turn_")
        return web.json_response([entity])

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the base URL."""
        routes = {"/api/states": self.all_states, "/api/states/{entity}": self.one_state,
                  "/api/services/{domain}/{service}": self.service}
        async with serve_app(routes) as url:
            yield url
