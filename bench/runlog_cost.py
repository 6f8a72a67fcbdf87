"""Run-log write cost per run (goal: < 0.2 ms) and its effect on webhook throughput.

1. Observer cost: N runs (a JSON input, a two-step record, an output) through
   ``run_started``/``run_finished``: the time on the event loop per run, and the whole cost
   per run until the writer thread has committed everything (encode, redact, SQLite WAL).
2. Webhook throughput of an in-process daemon with the run log attached, and with it
   detached (the baseline), measured alternately in the same run.

    .venv/bin/python bench/runlog_cost.py [--runs 20000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from harkd.core.pipeline import Pipeline
from harkd.core.run import Run, RunResult, StepRecord
from harkd.runlog import RunLog
from harkd.testing import run_daemon


class _Trigger:
    kind = "http"
    routes = ("/hooks/x",)


def _runs(n: int) -> list[Run]:
    p = Pipeline(name="x", file="x.yaml", trigger=_Trigger(), steps=())  # type: ignore[arg-type]
    out = []
    for i in range(n):
        run = Run(id=f"r{i:08d}", pipeline=p, services=None,  # type: ignore[arg-type]
                  input={"issue": {"title": f"bug {i}", "body": "text " * 40}},
                  trigger={"kind": "http", "path": "/hooks/x", "headers": {"a": "b"}})
        run.steps += [StepRecord(0, "template", None, time.time(), 0.0001),
                      StepRecord(1, "llm", "summary", time.time(), 0.3,
                                 detail={"deployment": "openai/m", "tokens": 50})]
        out.append(run)
    return out


def observer_cost(n: int) -> tuple[float, float]:
    runs = _runs(n)
    results = [RunResult(r.id, "ok", output="a summary " * 10, duration=0.3) for r in runs]
    log = RunLog.open(Path(tempfile.mkdtemp(prefix="harkd-runlog-")))
    t0 = time.perf_counter()
    for run, result in zip(runs, results, strict=True):
        log.run_started(run)
        log.run_finished(run, result)
    loop_side = time.perf_counter() - t0
    log.flush_sync(600)
    total = time.perf_counter() - t0
    log.close()
    return loop_side / n * 1000, total / n * 1000


async def throughput(requests: int, rounds: int) -> tuple[list[float], list[float]]:
    hook = "trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input.n }}'\n"
    with_log, without = [], []
    async with run_daemon(Path(tempfile.mkdtemp(prefix="harkd-rlbench-")), {"x": hook}) as d:
        runlog = d.daemon.runlog
        assert runlog is not None
        observers = d.daemon.services.observers

        async def burst() -> float:
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with sem, d.http.post(d.url("/hooks/x"), json={"n": i}) as r:
                    await r.read()

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(requests)))
            return requests / (time.perf_counter() - t0)

        await burst()  # warm up
        for _ in range(rounds):
            with_log.append(await burst())
            await runlog.flush()
            observers.remove(runlog)
            without.append(await burst())
            observers.append(runlog)
    return with_log, without


def main(n: int, requests: int) -> None:
    observer_cost(1000)  # warm up
    loop_ms, total_ms = observer_cost(n)
    with_log, without = asyncio.run(throughput(requests, 3))
    w, wo = statistics.median(with_log), statistics.median(without)
    print(f"run log cost: {n} runs, {os.cpu_count()} cores")
    print(f"  on the event loop      {loop_ms * 1000:.1f} us per run")
    print(f"  total incl. writer     {total_ms * 1000:.1f} us per run (encode, redact, SQLite)")
    print(f"  webhook throughput     {w:.0f} req/s with the run log, {wo:.0f} req/s without "
          f"(baseline): ratio {w / wo:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--requests", type=int, default=3000)
    a = p.parse_args()
    main(a.runs, a.requests)
