"""Three real ``harkd run`` replicas with one ``* * * * * *`` cron: each second fires once
in total, and the fires go on when the replica that ran the latest one is SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cluster_helpers import RedisServer

from harkd.testing import Spawned, serve_app, spawn_daemon, wait_until

pytestmark = pytest.mark.anyio


async def test_cron_fires_once_per_second_across_replicas_and_survives_sigkill(
        tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    fires: list[dict[str, Any]] = []

    async def collect(request: web.Request) -> web.Response:
        fires.append(await request.json())
        return web.json_response({"ok": True})

    async with serve_app({"/fire": collect}) as collector:
        pipeline = (
            "trigger:\n  cron: {schedule: '* * * * * *', catch_up: all, grace: 1h}\n"
            f"steps:\n  - http:\n      url: '{collector}/fire'\n      json:\n"
            "        scheduled: '{{ trigger.scheduled }}'\n"
            "        replica: '{{ trigger.replica }}'\n"
            "        fence: '{{ trigger.fence }}'\n")
        config = tmp_path / "harkd.yaml"
        config.write_text(f"cluster: {{redis: '{redis_server.url}', replica: "
                          f"'${{env:REPLICA}}', prefix: {prefix}, probe: 200ms}}\n")
        stack = contextlib.ExitStack()
        replicas: dict[str, Spawned] = {}
        try:
            for name in ("r1", "r2", "r3"):
                replicas[name] = await asyncio.to_thread(stack.enter_context, spawn_daemon(
                    tmp_path / name, {"tick": pipeline}, args=("--config", str(config)),
                    env={"REPLICA": name}))
            start = len(fires)
            await wait_until(lambda: len(fires) >= start + 4, timeout=30)
            leader = fires[-1]["replica"]
            replicas[leader].signal(signal.SIGKILL)
            await asyncio.to_thread(replicas[leader].wait, 10)
            killed_at = time.time()
            await wait_until(lambda: sum(float(f["scheduled"]) > killed_at + 1 for f in fires)
                             >= 4, timeout=30)
        finally:
            await asyncio.to_thread(stack.close)

    seconds = [round(float(f["scheduled"])) for f in fires]
    assert len(seconds) == len(set(seconds)), "a fire ran on more than one replica"
    fences = [int(f["fence"]) for f in fires]
    assert len(fences) == len(set(fences))
    after = [f for f in fires if float(f["scheduled"]) > killed_at + 1]
    assert after and leader not in {f["replica"] for f in after}
    assert len({f["replica"] for f in fires}) >= 2
    # Every second between the first and the last fire ran, except at most the one the
    # leader may have started as it was killed (a run that began counts as run).
    missing = set(range(min(seconds), max(seconds) + 1)) - set(seconds)
    assert len(missing) <= 1 and all(abs(s - killed_at) <= 2 for s in missing), missing
