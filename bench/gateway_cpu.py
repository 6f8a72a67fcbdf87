"""The gateway's CPU per proxied call (issue 13): ``POST /v1/chat/completions`` through
harkd (pinned to CPU 1) to the scripted upstream (``upstream.py``, CPU 0), driven by
``wrk`` on CPU 0, whole and streamed calls; the CPU each server used per call.

``--split`` adds the same 100 clients from ``peers.py``'s Python load generator (floating
over both cores), direct and through harkd, with each process's CPU per call and the
cores left idle: what ``peers.py --only gateway``'s 100-client ratio is made of.
``--py-spy FILE`` records harkd under the first wrk run (py-spy raw format, all threads:
keep the stacks that hold ``harkd/__main__`` for the event loop).

    .venv/bin/python bench/gateway_cpu.py [--seconds 5] [--repeats 2] [--split]
    PYTHONPATH=/tmp/old/daemon .venv/bin/python bench/gateway_cpu.py   # another tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load, tree_cpu_s, wrk
from peers import harkd_server, upstream

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def idle_cores() -> float:
    """Idle seconds summed over all CPUs so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[4]) / os.sysconf("SC_CLK_TCK")


def spy(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
        return None
    proc = subprocess.Popen([exe, "record", "-o", out, "-f", "raw", "-r", "500", "-p",
                             str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--split", action="store_true")
    p.add_argument("--py-spy", dest="pyspy")
    a = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        up = stack.enter_context(upstream(cpu=0))
        root = Path(tmp)
        h = stack.enter_context(harkd_server(root, config=(
            f"models:\n  default:\n    - {{model: openai/fake, api_base: '{up.url('/v1')}', "
            "api_key: x}\n"), cpu=1, level="warning"))
        url = h.url("/v1/chat/completions")
        wrk(url, 10, 1, json_body=CHAT, cpu=0)
        profile = a.pyspy
        for stream in (False, True):
            body = {**CHAT, "stream": True} if stream else CHAT
            for conns in (10, 100):
                for _ in range(a.repeats):
                    recorder = spy(h.pid, profile) if profile and not stream else None
                    profile = None if recorder else profile
                    c0, u0 = tree_cpu_s(h.pid), tree_cpu_s(up.pid)
                    r = wrk(url, conns, a.seconds, json_body=body, cpu=0)
                    c1, u1 = tree_cpu_s(h.pid), tree_cpu_s(up.pid)
                    if recorder is not None:
                        recorder.send_signal(2)
                        recorder.wait()
                    n = max(1, r.requests)
                    print(f"{'streamed' if stream else 'whole'}, {conns} connections: "
                          f"{r.requests / r.seconds:,.0f} calls/s ({r.errors} errors); CPU "
                          f"per call: harkd {(c1 - c0) / n * 1e6:.1f} us, upstream "
                          f"{(u1 - u0) / n * 1e6:.1f} us", flush=True)
        if not a.split:
            return
        targets = {"direct": up.url("/v1/chat/completions"), "harkd": url}
        for _ in range(a.repeats):
            for name, target in targets.items():
                asyncio.run(load(target, 2, count=20, json_body=CHAT))
                c0, u0, i0 = tree_cpu_s(h.pid), tree_cpu_s(up.pid), idle_cores()
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                r = asyncio.run(load(target, 100, duration=a.seconds, json_body=CHAT))
                r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                c1, u1, i1 = tree_cpu_s(h.pid), tree_cpu_s(up.pid), idle_cores()
                n = max(1, r.requests)
                gen = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
                print(f"Python load generator, 100 clients, {name}: {r.rps:,.0f} calls/s; "
                      f"CPU per call: generator {gen / n * 1e6:.0f} us, harkd "
                      f"{(c1 - c0) / n * 1e6:.0f} us, upstream {(u1 - u0) / n * 1e6:.0f} us; "
                      f"idle {(i1 - i0) / (t1 - t0):.2f} cores", flush=True)


if __name__ == "__main__":
    main()
