"""The web console's speed: server time to render the runs page with 10,000 runs in the
log (goal: under 300 ms), and the weight of its JavaScript and CSS (goal: under 100 KB).

The run log is filled through the real :class:`~harkd.runlog.RunLog` (the same encoding and
SQLite writes as a daemon), then ``harkd run`` starts on it as a child process and each page
is fetched ``--repeats`` times over one keep-alive connection. Server time is the page
handler's own ``Server-Timing`` (query and render); the client figure adds HTTP on
loopback. Baselines in the same run: ``/api/runs?limit=50`` (the same page of runs as
JSON, no HTML) and ``/healthz`` (the listener alone).

    .venv/bin/python bench/console.py [--runs 10000] [--repeats 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from harkd.console.views import static_files
from harkd.core.pipeline import Pipeline
from harkd.core.run import Run, RunResult, StepRecord
from harkd.runlog import Limits, RunLog
from harkd.state import subdir
from harkd.testing import spawn_daemon

PIPELINES = ("triage", "kitchen", "digest")
FILES = {name: "trigger: {http: {}}\nsteps:\n  - template: ok\n" for name in PIPELINES}


class _Trigger:
    kind = "http"
    routes = ("/hooks/x",)


def fill(state: Path, n: int) -> str:
    """Write ``n`` runs (one in ten failed, three steps each) into the run log in
    ``state``; returns the id of the newest."""
    log = RunLog.open(subdir(state, "runs"), Limits(keep=n))
    pipelines = [Pipeline(name=p, file=f"{p}.yaml", trigger=_Trigger(),  # type: ignore[arg-type]
                          steps=()) for p in PIPELINES]
    now = time.time()
    run_id = ""
    for i in range(n):
        started = now - (n - i) * 30.0  # one run every 30 s: 10,000 span 3.5 days
        run = Run(id=f"bench{i:08d}", pipeline=pipelines[i % 3], services=None,  # type: ignore[arg-type]
                  input={"issue": {"title": f"bug {i}", "body": "text " * 40}},
                  trigger={"kind": "http", "path": "/hooks/x"}, started=started)
        run.steps += [StepRecord(0, "set", None, started, 0.0002),
                      StepRecord(1, "llm", "summary", started + 0.001, 0.4,
                                 detail={"alias": "default", "deployment": "openai/m",
                                         "prompt_tokens": 120, "completion_tokens": 30}),
                      StepRecord(2, "http", None, started + 0.402, 0.05)]
        failed = i % 10 == 0
        result = RunResult(run.id, "error" if failed else "ok",
                           output=None if failed else {"summary": "A crash on save."},
                           error="upstream said 500" if failed else None,
                           http_status=502 if failed else 200, duration=0.46)
        log.run_started(run)
        log.run_finished(run, result)
        run_id = run.id
    log.close()
    return run_id


async def measure(base: str, path: str, repeats: int) -> dict[str, float]:
    """Median and 95th percentile of the server's time and the client's, in ms."""
    server: list[float] = []
    client: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(repeats + 5):
            t0 = time.perf_counter()
            async with http.get(base + path) as r:
                await r.read()
                assert r.status == 200, (path, r.status)
                timing = r.headers.get("Server-Timing", "")
            took = (time.perf_counter() - t0) * 1000
            if i < 5:
                continue  # warm-up: templates compiled, SQLite pages cached
            client.append(took)
            if "dur=" in timing:
                server.append(float(timing.split("dur=")[1]))

    def p95(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.95) - 1] if xs else float("nan")

    return {"server_median": statistics.median(server) if server else float("nan"),
            "server_p95": p95(server), "client_median": statistics.median(client),
            "client_p95": p95(client)}


def weight() -> list[tuple[str, int, int]]:
    """(file, bytes, gzip bytes) of every JavaScript and CSS file the console serves."""
    return [(p.name, len(p.read_bytes()), len(gzip.compress(p.read_bytes(), 9)))
            for p in static_files() if p.suffix in (".js", ".css")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        newest = fill(root / "state", args.runs)
        print(f"run log: {args.runs:,} runs written in {time.perf_counter() - t0:.1f} s")
        with spawn_daemon(root, FILES) as d:
            pages = [("/healthz", "baseline: the listener alone"),
                     ("/api/runs?limit=50", "baseline: the same 50 runs as JSON"),
                     ("/ui/runs", "runs page, first 50 (no filter)"),
                     ("/ui/runs?status=error", "runs page, status=error"),
                     ("/ui/runs?pipeline=kitchen", "runs page, pipeline=kitchen"),
                     ("/ui/runs?within=24h", "runs page, started in the last 24h"),
                     (f"/ui/runs/{newest}", "one run's page (waterfall, LLM calls)"),
                     ("/ui/pipelines", "pipelines page")]
            results = {path: asyncio.run(measure(d.base, path, args.repeats))
                       for path, _ in pages}
    print(f"\nserver and client time per page, {args.repeats} requests each, "
          f"{args.runs:,} runs in the log (ms); {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'page':<42} {'server med':>10} {'p95':>7} {'client med':>10} {'p95':>7}")
    for path, label in pages:
        r = results[path]
        print(f"{label:<42} {r['server_median']:>10.2f} {r['server_p95']:>7.2f} "
              f"{r['client_median']:>10.2f} {r['client_p95']:>7.2f}")
    runs, api = results["/ui/runs"], results["/api/runs?limit=50"]
    print(f"\nruns page vs the same runs as JSON (client median): "
          f"{runs['client_median'] / api['client_median']:.2f}x; "
          f"goal: server time under 300 ms -> {runs['server_median']:.2f} ms "
          f"({'met' if runs['server_p95'] < 300 else 'NOT met'} at p95)")
    files = weight()
    total, total_gz = sum(f[1] for f in files), sum(f[2] for f in files)
    print("\npage weight (every JavaScript and CSS file the console can load)")
    for name, size, gz in files:
        print(f"  {name:<14} {size / 1024:6.1f} KB  gzip {gz / 1024:5.1f} KB")
    print(f"  {'total':<14} {total / 1024:6.1f} KB  gzip {total_gz / 1024:5.1f} KB  "
          f"(goal: under 100 KB -> {'met' if total < 100 * 1024 else 'NOT met'})")


if __name__ == "__main__":
    main()
