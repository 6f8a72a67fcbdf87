"""Cron leases beyond the happy path, with two in-process replicas and a real Redis: fires
are deferred while Redis is down and caught up once when it is back, and a fire claimed
by a replica that died before confirming it is caught up by another after the lease."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cluster_helpers import RedisServer

from harkd.testing import capture_logs, run_daemon, serve_app, wait_until

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def two_replicas(tmp_path: Path, redis: RedisServer, prefix: str,
                       catch_up: str) -> AsyncIterator[list[dict[str, Any]]]:
    fires: list[dict[str, Any]] = []

    async def collect(request: web.Request) -> web.Response:
        fires.append(await request.json())
        return web.json_response({})

    async with serve_app({"/fire": collect}) as collector:
        pipeline = (
            f"trigger:\n  cron: {{schedule: '* * * * * *', catch_up: {catch_up}, grace: 1h}}\n"
            f"steps:\n  - http:\n      url: '{collector}/fire'\n      json:\n"
            "        scheduled: '{{ trigger.scheduled }}'\n"
            "        catch_up: '{{ trigger.catch_up }}'\n"
            "        replica: '{{ trigger.replica }}'\n")
        config = (f"cluster: {{redis: '{redis.url}', prefix: {prefix}, replica: NAME, "
                  "probe: 100ms}\n")
        async with contextlib.AsyncExitStack() as stack:
            for name in ("a", "b"):
                await stack.enter_async_context(run_daemon(
                    tmp_path / name, {"tick": pipeline}, config=config.replace("NAME", name)))
            yield fires


def seconds(fires: list[dict[str, Any]]) -> list[int]:
    return [round(float(f["scheduled"])) for f in fires]


async def test_fires_are_deferred_while_redis_is_down_and_caught_up_once(
        tmp_path: Path, own_redis: RedisServer, prefix: str) -> None:
    with capture_logs() as logs:
        async with two_replicas(tmp_path, own_redis, prefix, "latest") as fires:
            await wait_until(lambda: len(fires) >= 2, timeout=10)
            own_redis.kill()
            down_at = time.time()
            await asyncio.sleep(2.6)
            during = [f for f in fires if float(f["scheduled"]) > down_at + 0.5]
            assert during == []  # cron_offline: defer
            own_redis.start()
            back_at = time.time()
            await wait_until(lambda: sum(float(f["scheduled"]) > back_at for f in fires) >= 2,
                             timeout=10)
    got = seconds(fires)
    assert len(got) == len(set(got))
    caught = [f for f in fires if f["catch_up"] is True]
    # catch_up: latest: one deferred fire (the newest) runs, on one replica.
    assert len(caught) == 1 and down_at < float(caught[0]["scheduled"]) < back_at
    assert any(e["event"] == "cron_deferred" for e in logs)
    assert any(e["event"] == "cron_missed" and e.get("reason") == "redis unavailable"
               for e in logs)


async def test_a_claim_never_confirmed_is_caught_up_after_its_lease(
        tmp_path: Path, redis_server: RedisServer, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.asyncio as aioredis

    from harkd.cluster import cron

    monkeypatch.setattr(cron, "LEASE", 1.0)
    async with two_replicas(tmp_path, redis_server, prefix, "all") as fires:
        await wait_until(lambda: len(fires) >= 1, timeout=10)
        ghost = float(int(time.time()) + 2)
        client = aioredis.Redis.from_url(redis_server.url)
        # A replica that claimed this fire and died before confirming it.
        # Its lease runs out one second after the fire time (LEASE is 1 s here).
        await client.set(f"{prefix}:cron:tick:{ghost:.3f}", "claim|999999|ghost",
                         px=int((ghost + 1.0 - time.time()) * 1000))
        await client.aclose()
        await wait_until(lambda: any(float(f["scheduled"]) == ghost for f in fires),
                         timeout=10)
        await wait_until(lambda: max(float(f["scheduled"]) for f in fires) >= ghost + 2,
                         timeout=10)
    got = seconds(fires)
    assert len(got) == len(set(got))
    late = [f for f in fires if float(f["scheduled"]) == ghost]
    assert len(late) == 1 and late[0]["catch_up"] is True
