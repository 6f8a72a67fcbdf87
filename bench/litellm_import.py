"""The event loop's lag during the first call through LiteLLM (issue 17).

``import litellm`` takes seconds. harkd imports it in a worker thread on the first call
that needs it; this measures how long the loop stalls meanwhile. A ticker task sleeps
1 ms in a loop and records the longest gap between its wake-ups, while:

- harkd: the first ``Router.complete`` on an ``anthropic/...`` deployment (a scripted
  Anthropic upstream in the same process), which imports litellm in a thread;
- baseline: ``import litellm`` run directly on the loop (what a naive backend would do).

Each mode runs in a fresh interpreter (the import happens once per process), ``--repeats``
times; figures are the median (min-max).

    .venv/bin/python bench/litellm_import.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


async def _ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _measure(mode: str) -> dict[str, Any]:
    from harkd.router import ChatRequest, Router
    from harkd.settings import Settings
    from harkd.testing_cloud import ScriptedAnthropic

    async with ScriptedAnthropic() as up:
        router = Router.from_settings(Settings(models={"a": [{
            "model": "anthropic/claude-3-5-haiku-20241022", "api_base": up.base,
            "api_key": "bench"}]}))
        req = ChatRequest(model="a", messages=({"role": "user", "content": "hi"},))
        stop = asyncio.Event()
        gaps: list[float] = []
        ticker = asyncio.create_task(_ticker(stop, gaps))
        await asyncio.sleep(0.05)
        gaps.clear()
        t0 = time.perf_counter()
        if mode == "inline":
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm  # noqa: F401 - the baseline: a blocking import on the loop
        await router.complete(req)
        first = time.perf_counter() - t0
        stop.set()
        await ticker
        t1 = time.perf_counter()
        await router.complete(req)
        second = time.perf_counter() - t1
        await router.aclose()
    return {"first_call_s": first, "second_call_s": second,
            "max_lag_ms": max(gaps) * 1000, "ticks": len(gaps)}


def _child(mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", mode], check=True,
                         capture_output=True, text=True, env={**os.environ,
                                                             "PYTHONWARNINGS": "ignore"})
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _fmt(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.1f} {unit} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["harkd", "inline"])
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.child))))
        return
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict[str, Any]]] = {"harkd": [], "inline": []}
    for _ in range(args.repeats):
        for mode in runs:  # alternate, so drift hits both alike
            runs[mode].append(_child(mode))
    for mode, label in (("harkd", "harkd (import in a thread)"),
                        ("inline", "baseline (import on the loop)")):
        rs = runs[mode]
        print(f"{label:32} first call {_fmt([r['first_call_s'] * 1000 for r in rs], 'ms')}, "
              f"max loop lag {_fmt([r['max_lag_ms'] for r in rs], 'ms')}, "
              f"second call {_fmt([r['second_call_s'] * 1000 for r in rs], 'ms')}")
    lag = statistics.median(r["max_lag_ms"] for r in runs["harkd"])
    base = statistics.median(r["max_lag_ms"] for r in runs["inline"])
    print(f"max loop lag, harkd / baseline: {lag / base:.3f}")


if __name__ == "__main__":
    main()
