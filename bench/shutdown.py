"""Shutdown time with in-flight webhook runs: SIGTERM while N runs wait on a slow upstream.

Every run must finish (answer 200) and harkd must exit 0 within its shutdown timeout.
The upstream answers ``--hold`` seconds after the signal, so the ideal shutdown time is
``hold``; the figure to read is the overhead above it.

    .venv/bin/python bench/shutdown.py [--runs 100] [--hold 2] [--timeout 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from harkd.testing import spawn_daemon

PER_HOST = 64


async def _upstream(release: asyncio.Event, arrived: list[float]) -> web.AppRunner:
    async def slow(request: web.Request) -> web.Response:
        body = await request.json()
        arrived.append(time.monotonic())
        await release.wait()
        return web.json_response({"echo": body})

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def measure(runs: int, hold: float, timeout: float) -> dict[str, Any]:
    release = asyncio.Event()
    arrived: list[float] = []
    runner = await _upstream(release, arrived)
    port = runner.addresses[0][1]
    pipeline = ("trigger: {http: {}}\nconcurrency: {max: MAX}\nsteps:\n"
                "  - http: {url: 'http://127.0.0.1:PORT/slow', method: POST, timeout: 120s,"
                " json: '{{ input }}'}\n  - template: 'done {{ input.echo.n }}'\n"
                ).replace("MAX", str(runs * 2)).replace("PORT", str(port))
    with tempfile.TemporaryDirectory() as tmp, spawn_daemon(
            Path(tmp), {"relay": pipeline},
            env={"HARKD_SHUTDOWN_TIMEOUT": f"{timeout}s", "HARKD_LOG_LEVEL": "warning"}) as d:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            async def one(n: int) -> tuple[int, str]:
                async with http.post(d.url("/hooks/relay"), json={"n": n},
                                     timeout=aiohttp.ClientTimeout(total=300)) as resp:
                    return resp.status, await resp.text()

            tasks = [asyncio.create_task(one(n)) for n in range(runs)]
            # harkd's pooled client opens at most 64 connections per host, so past 64 the
            # runs wait in its connector: in flight all the same. Wait until no more come.
            deadline = time.monotonic() + 60
            while len(arrived) < min(runs, PER_HOST) or time.monotonic() - arrived[-1] < 0.5:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(arrived)} runs reached the upstream")
                await asyncio.sleep(0.01)
            in_flight = sum(1 for t in tasks if not t.done())
            at_upstream = len(arrived)
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            loop.call_later(hold, release.set)
            code = await loop.run_in_executor(None, d.wait, timeout + 60)
            t_exit = time.monotonic() - t0
            answers = await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    ok = sum(1 for n, a in enumerate(answers) if a == (200, f"done {n}"))
    return {"runs": runs, "in_flight_at_sigterm": in_flight, "waiting_upstream": at_upstream,
            "answered_200": ok, "exit_code": code, "hold_s": hold,
            "shutdown_s": round(t_exit, 3), "overhead_s": round(t_exit - hold, 3),
            "timeout_s": timeout, "within_timeout": t_exit < timeout}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--hold", type=float, default=2.0, help="seconds runs go on after SIGTERM")
    p.add_argument("--timeout", type=float, default=30.0, help="server.shutdown_timeout")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    result = asyncio.run(measure(args.runs, args.hold, args.timeout))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    good = (result["answered_200"] == args.runs and result["exit_code"] == 0
            and result["within_timeout"])
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
