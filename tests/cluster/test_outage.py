"""Redis killed (SIGKILL) and restarted under load: no request is lost, ``/readyz`` says
so, the outage is logged once per replica, and turns written meanwhile reach Redis."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import RedisServer, cluster_config

from harkd.testing import DaemonHandle, capture_logs, run_daemon, wait_until
from harkd.testing_upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

CHAT = ("trigger: {http: {}}\n"
        "steps:\n  - llm: {model: m, session: '{{ input.user }}', prompt: '{{ input.text }}'}\n")


async def health(d: DaemonHandle) -> str:
    async with d.http.get(d.url("/readyz")) as resp:
        assert resp.status == 200  # still ready: it serves on local state
        body: dict[str, Any] = await resp.json()
    return str(body["cluster"]["health"])


async def test_redis_killed_and_restarted_mid_load_loses_no_request(
        tmp_path: Path, own_redis: RedisServer, prefix: str,
        upstream: ScriptedUpstream) -> None:
    statuses: list[int] = []
    stop = asyncio.Event()

    async def worker(n: int, ds: list[DaemonHandle]) -> None:
        i = 0
        while not stop.is_set():
            d = ds[i % 2]
            i += 1
            if i % 2:
                req = d.http.post(d.url("/hooks/chat"), json={"user": f"w{n}", "text": f"t{i}"})
            else:  # the same few questions: the shared cache (memory while Redis is down)
                req = d.http.post(d.url("/v1/chat/completions"), json={
                    "model": "m", "messages": [{"role": "user", "content": f"g{i % 5}"}]})
            async with req as resp:
                await resp.read()
                statuses.append(resp.status)

    with capture_logs() as logs:
        async with contextlib.AsyncExitStack() as stack:
            ds = [await stack.enter_async_context(run_daemon(
                tmp_path / name, {"chat": CHAT},
                config=cluster_config(own_redis.url, prefix, name, upstream,
                                      deployment="rpm: 100000, max_concurrent: 50",
                                      router="cache: {store: redis, aliases: [m]}")))
                for name in ("a", "b")]
            a, b = ds
            workers = [asyncio.create_task(worker(n, ds)) for n in range(4)]
            await wait_until(lambda: len(statuses) >= 40, timeout=20)
            own_redis.kill()
            await wait_until(lambda: len(statuses) >= 80, timeout=20)
            assert await health(a) in ("down", "slow") and await health(b) in ("down", "slow")
            async with a.http.post(a.url("/hooks/chat"),
                                   json={"user": "outage", "text": "remember 42"}) as resp:
                assert resp.status == 200
            own_redis.start()

            async def both_up() -> bool:
                return await health(a) == "up" and await health(b) == "up"

            await wait_until(both_up, timeout=20)
            seen = len(statuses)
            await wait_until(lambda: len(statuses) >= seen + 40, timeout=20)
            stop.set()
            await asyncio.gather(*workers)
            # The turn written on A while Redis was down was pushed when it came back.
            async with b.http.post(b.url("/hooks/chat"),
                                   json={"user": "outage", "text": "what number?"}) as resp:
                assert resp.status == 200
            sent = [m["content"] for m in upstream.last("m1").body["messages"]]
            assert sent == ["remember 42", "echo: remember 42", "what number?"]
    assert len(statuses) >= 120 and set(statuses) == {200}
    downs = [e for e in logs if e["event"] == "cluster_redis_down"]
    assert sorted(e["replica"] for e in downs) == ["a", "b"]  # once per replica
    assert {e["replica"] for e in logs if e["event"] == "cluster_redis_back"} == {"a", "b"}


async def test_a_hung_redis_is_slow_and_requests_do_not_wait_for_it(
        tmp_path: Path, own_redis: RedisServer, prefix: str,
        upstream: ScriptedUpstream) -> None:
    import os
    import signal

    assert own_redis.proc is not None
    async with run_daemon(tmp_path / "a", {"chat": CHAT},
                          config=cluster_config(own_redis.url, prefix, "a", upstream,
                                                deployment="max_concurrent: 5")) as a:

        async def up() -> bool:
            return await health(a) == "up"

        # A first connect slower than its deadline (a loaded host) starts "slow", which
        # is not counted as an outage; the one counted below is the hang.
        await wait_until(up, timeout=20)
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # accepts, never answers
        try:
            for i in range(20):
                async with a.http.post(a.url("/hooks/chat"),
                                       json={"user": "s", "text": f"t{i}"}) as resp:
                    assert resp.status == 200
            assert await health(a) == "slow"
            async with a.http.get(a.url("/readyz")) as resp:
                detail = (await resp.json())["cluster"]
            assert detail["serving"] == "local state" and "within" in detail["error"]
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        await wait_until(up, timeout=20)
        async with a.http.get(a.url("/metrics")) as resp:
            text = await resp.text()
        assert 'harkd_cluster_redis_outages_total{replica="a"} 1.0' in text


async def test_a_replica_starts_while_redis_is_down_and_joins_when_it_is_up(
        tmp_path: Path, own_redis: RedisServer, prefix: str,
        upstream: ScriptedUpstream) -> None:
    own_redis.kill()
    with capture_logs() as logs:
        async with run_daemon(tmp_path / "a", {"chat": CHAT},
                              config=cluster_config(own_redis.url, prefix, "a",
                                                    upstream)) as a:
            assert await health(a) == "down"
            async with a.http.post(a.url("/hooks/chat"),
                                   json={"user": "s", "text": "early"}) as resp:
                assert resp.status == 200
            own_redis.start()

            async def up() -> bool:
                return await health(a) == "up"

            await wait_until(up, timeout=20)
            async with a.http.post(a.url("/hooks/chat"),
                                   json={"user": "s", "text": "later"}) as resp:
                assert resp.status == 200
            # The turn from before Redis came up was pushed to it.
            sent = [m["content"] for m in upstream.last("m1").body["messages"]]
            assert sent == ["early", "echo: early", "later"]
    assert [e["event"] for e in logs if e["event"].startswith("cluster_redis")] == [
        "cluster_redis_down", "cluster_redis_back"]  # logged once each
    assert any(e["event"] == "cluster_sessions_replayed" and e["turns"] == 2 for e in logs)
