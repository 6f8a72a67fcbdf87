"""Programmatic entry points that the CLI and tests share: invoke, ask, list."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .catalog import Catalog
from .engine import RunResult
from .registry import default as default_registry
from .services import Services
from .settings import Settings


async def invoke(settings: Settings, name: str, data: Any = None) -> RunResult:
    """Load the pipelines folder in-process and run ``name`` once (no listener)."""
    services = Services(settings, default_registry())
    catalog = Catalog(services, settings.pipelines)
    services.catalog = catalog
    try:
        await catalog.scan()
        entry = catalog.entries.get(name)
        if entry is None or entry.bound is None:
            known = ", ".join(sorted(catalog.entries)) or "none"
            why = "; ".join(str(e) for e in entry.errors) if entry else f"known: {known}"
            return RunResult("-", "error", error=f"pipeline {name!r} is not loadable ({why})",
                             http_status=404)
        bound = entry.bound
        return await bound.run(bound.new_run(data, {"kind": "invoke"}))
    finally:
        await catalog.close(settings.shutdown_timeout)
        await services.aclose()


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
    services = Services(settings, default_registry())
    catalog = Catalog(services, settings.pipelines)
    try:
        await catalog.scan()
        return f"offline, {settings.pipelines}", [
            catalog.entries[n].describe() for n in sorted(catalog.entries)]
    finally:
        await catalog.close(1.0)
        await services.aclose()
