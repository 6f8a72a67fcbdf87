"""Memory under compressed cron + webhook traffic: harkd's RSS must stay flat.

A day of traffic squeezed into ``--duration`` seconds: cron pipelines firing every second
(a six-field schedule) and a steady mix of webhook runs (template, set, a nested
``pipeline`` call, an outgoing ``http`` step, failing runs). RSS is read from /proc every
second; the baseline is the median over 40-50 % of the run, the end figure the median over
the last 10 %. The goal: growth under 5 %. The first minute is warm-up (SQLite's page
cache for the run log, the allocator's arenas: about +2.5 MB here), hence the late baseline;
``rss_start_kb`` and the series show it.

    .venv/bin/python bench/soak.py [--duration 120] [--rate 40] [--cron 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from harkd.testing import spawn_daemon

PIPELINES = {
    "hook": "trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input.name }}'\n",
    "calc": ("trigger: {http: {}}\nsteps:\n  - set: {total: 'input.nums | sum'}\n"
             "  - template: '{{ {\"total\": vars.total, \"n\": input.nums | length} }}'\n"),
    "chain": "trigger: {http: {}}\nsteps:\n  - pipeline: {name: hook, input: '{{ input }}'}\n",
    "fail": "trigger: {http: {}}\nsteps:\n  - template: '{{ input.missing.deeper }}'\n",
}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _upstream() -> web.AppRunner:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"echo": await request.json()})

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def soak(duration: float, rate: float, crons: int) -> dict[str, Any]:
    upstream = await _upstream()
    port = upstream.addresses[0][1]
    files = dict(PIPELINES)
    files["relay"] = ("trigger: {http: {}}\nsteps:\n  - http: {url: 'http://127.0.0.1:PORT/echo',"
                      " method: POST, json: '{{ input }}'}\n").replace("PORT", str(port))
    for i in range(crons):
        files[f"tick{i}"] = ("trigger:\n  cron: {schedule: '* * * * * *'}\nsteps:\n"
                             "  - set: {n: 'run.id | length'}\n"
                             "  - template: 'tick {{ vars.n }}'\n")
    kinds = [("hook", {"name": "Ada"}), ("calc", {"nums": list(range(20))}),
             ("chain", {"name": "Bo"}), ("relay", {"x": "y" * 200}), ("fail", {})]
    counts: dict[str, int] = {}
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp, spawn_daemon(
            Path(tmp), files, env={"HARKD_LOG_LEVEL": "warning"}) as d:
        async with aiohttp.ClientSession() as http:
            async with http.get(d.url("/api/pipelines")) as resp:
                listed = await resp.json() if resp.status == 200 else []
            items = listed.get("pipelines", listed) if isinstance(listed, dict) else listed
            states = {p["name"]: p["state"] for p in items if isinstance(p, dict)}
            t0 = time.monotonic()
            stop = t0 + duration

            async def sampler() -> None:
                while time.monotonic() < stop:
                    samples.append((time.monotonic() - t0, _rss_kb(d.proc.pid)))
                    await asyncio.sleep(1.0)

            async def client(offset: int, workers: int) -> None:
                n = offset
                interval = workers / rate
                next_at = time.monotonic()
                while time.monotonic() < stop:
                    name, body = kinds[n % len(kinds)]
                    n += workers
                    try:
                        async with http.post(d.url(f"/hooks/{name}"), json=body) as resp:
                            await resp.read()
                            key = f"{name}:{resp.status}"
                    except aiohttp.ClientError as exc:
                        key = f"{name}:{type(exc).__name__}"
                    counts[key] = counts.get(key, 0) + 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

            workers = 8
            await asyncio.gather(sampler(), *(client(i, workers) for i in range(workers)))
            async with http.get(d.url("/metrics")) as resp:
                metrics = await resp.text() if resp.status == 200 else ""
        log = d.output()
    await upstream.cleanup()
    n = len(samples)
    base = statistics.median(kb for _, kb in samples[int(n * 0.4): max(int(n * 0.4) + 1,
                                                                        n // 2)])
    end = statistics.median(kb for _, kb in samples[-max(1, n // 10):])
    cron_runs = _cron_runs(metrics)
    errors = [line for line in log.splitlines() if '"level": "error"' in line]
    return {
        "duration_s": duration, "webhook_rate_per_s": rate, "cron_pipelines": crons,
        "cron_states": {k: v for k, v in states.items() if k.startswith("tick")},
        "requests": counts, "requests_total": sum(counts.values()),
        "rss_start_kb": samples[0][1] if samples else None,
        "rss_baseline_kb": int(base), "rss_end_kb": int(end),
        "rss_growth_pct": round((end - base) / base * 100, 2),
        "rss_max_kb": max(kb for _, kb in samples),
        "rss_series_kb": [kb for _, kb in samples[:: max(1, n // 20)]],
        "cron_runs": cron_runs, "error_log_lines": len(errors),
    }


def _cron_runs(metrics: str) -> int | None:
    """Runs of the tick pipelines, from harkd_runs_total on /metrics."""
    total, seen = 0.0, False
    for line in metrics.splitlines():
        if line.startswith("harkd_runs_total{") and 'pipeline="tick' in line:
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return int(total) if seen else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=120.0,
                   help="seconds of traffic (the issue's full figure: 600)")
    p.add_argument("--rate", type=float, default=40.0, help="webhook requests per second")
    p.add_argument("--cron", type=int, default=4, help="cron pipelines firing every second")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    result = asyncio.run(soak(args.duration, args.rate, args.cron))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["rss_growth_pct"] < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
