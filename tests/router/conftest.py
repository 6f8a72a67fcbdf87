"""Shared fixtures of the router tests: one scripted upstream for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from router_helpers import FAST, MakeRouter

from harkd.router import Router
from harkd.settings import Settings
from harkd.testing_upstream import ScriptedUpstream


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
async def upstream_server() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as up:
        yield up


@pytest.fixture
async def upstream(upstream_server: ScriptedUpstream) -> AsyncIterator[ScriptedUpstream]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
async def make_router(upstream: ScriptedUpstream) -> AsyncIterator[MakeRouter]:
    """Build routers whose deployments are ``openai/NAME`` (or any mapping) on the
    scripted upstream; closed after the test."""
    made: list[Router] = []

    def make(models: dict[str, list[Any]], **router: Any) -> Router:
        resolved = {alias: [_entry(e, upstream) for e in entries]
                    for alias, entries in models.items()}
        r = Router.from_settings(Settings(models=resolved, router={**FAST, **router}))
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


def _entry(entry: Any, up: ScriptedUpstream) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"model": entry if "/" in entry else f"openai/{entry}"}
    out: dict[str, Any] = dict(entry)
    if "api_base" not in out and "local" not in out:
        provider = str(out["model"]).partition("/")[0]
        out["api_base"] = up.base if provider == "ollama" else up.v1
    return out
