"""Cron firing accuracy: lateness of each fire at one fire a second (goal: p99 < 20 ms).

``harkd run`` runs as a child process with a ``* * * * * *`` pipeline; lateness is the
run's ``trigger.fired`` minus ``trigger.scheduled`` (so it includes the fsync of the last
fire time), read from the run log at the end. Baseline in the same run: a bare asyncio
loop in this process that sleeps until each whole second and measures the same way.

    .venv/bin/python bench/cron_accuracy.py [--seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harkd.testing import free_port

PIPELINE = "trigger:\n  cron: {schedule: '* * * * * *'}\nsteps:\n  - template: tick\n"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


async def bare(seconds: float) -> list[float]:
    late = []
    end = time.time() + seconds
    while time.time() < end:
        target = int(time.time()) + 1
        await asyncio.sleep(target - time.time())
        late.append(time.time() - target)
    return late


def main(seconds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="harkd-cronbench-"))
    (root / "pipelines").mkdir()
    (root / "pipelines" / "tick.yaml").write_text(PIPELINE)
    port = free_port()
    env = {**os.environ, "HARKD_STATE": str(root / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "harkd", "run", "--pipelines",
                             str(root / "pipelines"), "--listen", f"127.0.0.1:{port}",
                             "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        # the baseline runs at the same time, so both see the same machine load
        baseline = asyncio.run(bare(seconds))
        late: list[float] = []
        cursor = ""
        while cursor is not None:
            page = get(f"{base}/api/runs?pipeline=tick&limit=500&cursor={cursor}")
            for r in page["runs"]:
                rec = get(f"{base}/api/runs/{r['id']}")
                t = rec["trigger_data"]
                if not t.get("catch_up"):
                    late.append(t["fired"] - t["scheduled"])
            cursor = page["next_cursor"]
    finally:
        proc.terminate()
        proc.wait(30)
    ms = [x * 1000 for x in late]
    b = [x * 1000 for x in baseline]
    print(f"cron accuracy: {len(ms)} fires over {seconds} s, {os.cpu_count()} cores")
    print(f"  harkd lateness    p50 {pct(ms, 50):.2f} ms  p99 {pct(ms, 99):.2f} ms  "
          f"max {max(ms):.2f} ms")
    print(f"  bare asyncio      p50 {pct(b, 50):.2f} ms  p99 {pct(b, 99):.2f} ms  "
          f"max {max(b):.2f} ms")
    print(f"  ratio p99         {pct(ms, 99) / max(pct(b, 99), 1e-6):.2f}x   "
          f"expected fires ~{seconds}, got {len(ms)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=600)
    main(p.parse_args().seconds)
