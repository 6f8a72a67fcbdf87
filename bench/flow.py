"""Control flow and `harkd test`: what a `map` costs, and how long the shipped tests take.

1. `map` over N items of a one-template sub-list, in-process through the engine (no HTTP),
   next to two baselines measured in the same run: N runs of a one-step template pipeline
   (each a whole run: gate, records, observers), and N bare renders of the same template.
   Goal: map / N runs under 1.5x.
2. `harkd test pipelines/` wall time (goal: under 1 s), next to `harkd check pipelines/`
   and a bare `python -c "import harkd"` in the same run.

    .venv/bin/python bench/flow.py [--items 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harkd import logs
from harkd.core.bound import Bound
from harkd.core.concurrency import Gate
from harkd.core.loader import load_bytes
from harkd.core.registry import default as default_registry
from harkd.errors import Position
from harkd.services import Services
from harkd.settings import Settings
from harkd.templates import text

ROOT = Path(__file__).resolve().parent.parent

MAP = """
trigger: {http: {}}
steps:
  - map: {over: "{{ input }}", concurrency: CONC, steps: [{template: "{{ input | upper }}"}]}
"""
ONE = 'trigger: {http: {}}\nsteps: [{template: "{{ input | upper }}"}]\n'


def bound(source: str, services: Services) -> Bound:
    loaded = load_bytes("bench.yaml", source.encode(), registry=services.registry)
    assert loaded.pipeline is not None, loaded.errors
    return Bound(loaded.pipeline, Gate(loaded.pipeline.concurrency), services)


async def map_figures(n: int, repeat: int) -> list[tuple[str, float]]:
    logs.configure("warning")  # a debug line per run would dominate the baseline
    services = Services(Settings(), default_registry())
    items = [f"item {i}" for i in range(n)]
    one = bound(ONE, services)
    maps = {c: bound(MAP.replace("CONC", str(c)), services) for c in (1, 4)}
    template = text("{{ input | upper }}", Position("bench"))

    async def runs() -> None:
        for item in items:
            result = await one.run(one.new_run(item, {"kind": "bench"}))
            assert result.ok

    async def mapped(b: Bound) -> None:
        result = await b.run(b.new_run(items, {"kind": "bench"}))
        assert result.ok and len(result.output) == n, result.error

    async def renders() -> None:
        for item in items:
            template.render({"input": item})

    async def timed(fn: Any) -> float:
        t0 = time.perf_counter()
        await fn()
        return time.perf_counter() - t0

    samples: dict[str, list[float]] = {"runs": [], "renders": [], "map1": [], "map4": []}
    await mapped(maps[1])  # warm up: imports, compiled templates
    for _ in range(repeat):  # interleaved, so drift hits every variant alike
        samples["renders"].append(await timed(renders))
        samples["runs"].append(await timed(runs))
        samples["map1"].append(await timed(lambda: mapped(maps[1])))
        samples["map4"].append(await timed(lambda: mapped(maps[4])))
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    await services.aclose()
    return [
        (f"{n} bare renders of the template, ms", med["renders"]),
        (f"{n} runs of a one-template pipeline, ms", med["runs"]),
        (f"map over {n} items, concurrency 1, ms", med["map1"]),
        (f"map over {n} items, concurrency 4, ms", med["map4"]),
        ("map (concurrency 1) / N runs, ratio (goal < 1.5)", med["map1"] / med["runs"]),
        ("map (concurrency 4) / N runs, ratio (goal < 1.5)", med["map4"] / med["runs"]),
        ("map (concurrency 1) per item, µs", med["map1"] * 1000 / n),
        ("map (concurrency 1) / bare renders, ratio", med["map1"] / med["renders"]),
    ]


def wall(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return statistics.median(times) * 1000


def test_figures(repeat: int) -> list[tuple[str, float]]:
    harkd = [sys.executable, "-m", "harkd"]
    bare = wall([sys.executable, "-c", "import harkd"], repeat)
    check = wall([*harkd, "check", "pipelines"], repeat)
    test = wall([*harkd, "test", "pipelines"], repeat)
    return [
        ("python -c 'import harkd', ms", bare),
        ("harkd check pipelines/, ms", check),
        ("harkd test pipelines/, ms (goal < 1000)", test),
        ("harkd test / harkd check, ratio", test / check),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    figures = asyncio.run(map_figures(args.items, args.repeat))
    figures += test_figures(max(3, args.repeat // 2))
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value:10.3f}")


if __name__ == "__main__":
    main()
