"""Cluster mode (issue 14): throughput with ``cluster:`` on versus off, and two replicas
versus one, on the scripted upstream (``bench/upstream.py``, instant answers).

Each harkd is a real ``harkd run`` process; Redis is Debian's ``redis-server`` on a free
port without persistence. Off and on runs alternate, ``--repeats`` times each; the median
requests/s of each is printed with the ratio on/off (the goal is >= 0.9x), and beside it
the CPU time harkd (plus Redis, when on) spent per request, whose ratio is what a
CPU-bound replica's throughput would be: on this shared 2-core machine req/s swings
2-3x between runs, CPU per request far less.

- ``webhook``: a one-step template pipeline (its path never touches Redis);
- ``chat``: a webhook whose ``llm`` step has a ``session`` (two Redis round trips a run:
  history read, turns pushed) through the gateway's deployment;
- ``gateway``: ``POST /v1/chat/completions`` on an alias whose deployment has ``rpm``
  (in a cluster: slots reserved in blocks, about one Lua call per block);
- ``gateway-mc``: the same with ``max_concurrent`` too (slots held in blocks);
- ``gateway-tpm``: ``rpm`` and ``tpm``: one exact Lua call per call, slots given back in
  batches;
- ``replicas``: the gateway with ``cluster`` on, the same clients spread over two replicas
  versus all on one (on a 2-core machine the two replicas share the cores with the load
  generator, the upstream and Redis, so read this as an upper bound of the overhead, not
  of the scaling).

    .venv/bin/python bench/cluster.py [--seconds 3] [--repeats 3] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    HARKD_PY,
    Load,
    Server,
    free_port,
    harkd_cmd,
    harkd_env,
    load,
    machine,
    serve,
    tree_cpu_s,
)

CHAT = ("trigger: {http: {}}\nsteps:\n"
        "  - llm: {model: m, session: '{{ input.user }}', prompt: '{{ input.text }}'}\n")
HELLO = "trigger: {http: {}}\nsteps: [{template: 'Hello, {{ input.name }}!'}]\n"


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is missing (scripts/setup installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", folder],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(500):
                out = subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                     capture_output=True, text=True)
                if out.stdout.strip() == "PONG":
                    break
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def config(upstream: str, redis: str | None, replica: str) -> str:
    text = (f"models:\n  m: [{{model: openai/bench, api_base: '{upstream}/v1', api_key: k, "
            "rpm: 10000000}]\n"
            f"  mc: [{{model: openai/bench, api_base: '{upstream}/v1', api_key: k, "
            "rpm: 10000000, max_concurrent: 10000}]\n"
            f"  mt: [{{model: openai/bench, api_base: '{upstream}/v1', api_key: k, "
            "rpm: 10000000, tpm: 1000000000}]\n"
            "log: {level: warning}\n")
    if redis is not None:
        text += f"cluster: {{redis: '{redis}', replica: {replica}}}\n"
    return text


@contextlib.contextmanager
def harkd(root: Path, upstream: str, redis: str | None,
          replica: str = "r1") -> Iterator[Server]:
    folder = root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hello.yaml").write_text(HELLO)
    (folder / "chat.yaml").write_text(CHAT)
    cfg = root / "harkd.yaml"
    cfg.write_text(config(upstream, redis, replica))
    port = free_port()
    with serve(harkd_cmd(folder, port, "--config", str(cfg)), port, "/readyz",
               env=harkd_env(root / "state")) as server:
        yield server


BODIES = {
    "webhook": ("/hooks/hello", {"name": "bench"}),
    "chat": ("/hooks/chat", {"user": "u", "text": "hi"}),
    "gateway": ("/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    "gateway-mc": ("/v1/chat/completions",
                   {"model": "mc", "messages": [{"role": "user", "content": "hi"}]}),
    "gateway-tpm": ("/v1/chat/completions",
                    {"model": "mt", "messages": [{"role": "user", "content": "hi"}]}),
}
KINDS = ("webhook", "chat", "gateway", "gateway-mc", "gateway-tpm")


@dataclass
class Figure:
    rps: float
    #: CPU time the harkd processes (and Redis, when it is used) spent per request: far
    #: steadier than req/s on a shared machine
    cpu_us: float


def measure(servers: list[Server], kind: str, clients: int, seconds: float,
            redis_pid: int | None = None) -> Figure:
    path, body = BODIES[kind]
    share = max(1, clients // len(servers))
    pids = [s.pid for s in servers] + ([redis_pid] if redis_pid else [])
    cpu0 = sum(tree_cpu_s(pid) for pid in pids)

    async def go() -> list[Load]:
        return await asyncio.gather(*(load(s.base + path, share, duration=seconds,
                                           json_body=body) for s in servers))

    runs = asyncio.run(go())
    cpu = sum(tree_cpu_s(pid) for pid in pids) - cpu0
    for run in runs:
        if run.errors:
            raise RuntimeError(f"{kind}: {run.errors} errors, statuses {run.statuses}")
    done = sum(r.requests for r in runs)
    return Figure(sum(r.rps for r in runs), cpu / max(1, done) * 1e6)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    print(f"# cluster bench: {machine()}; {args.clients} clients, {args.seconds:g}s runs, "
          f"{args.repeats} repeats (median req/s)")
    results: dict[str, list[Figure]] = {}
    with contextlib.ExitStack() as stack:
        port = free_port()
        up = stack.enter_context(serve([str(HARKD_PY), str(HERE / "upstream.py"), str(port)],
                                       port, "/health"))
        redis_url, redis_pid = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        off = stack.enter_context(harkd(tmp / "off", up.base, None))
        on = stack.enter_context(harkd(tmp / "on", up.base, redis_url, "r1"))
        on2 = stack.enter_context(harkd(tmp / "on2", up.base, redis_url, "r2"))
        for kind in KINDS:
            measure([off], kind, args.clients, 0.5)  # warm up both
            measure([on], kind, args.clients, 0.5, redis_pid)
        for _ in range(args.repeats):
            for kind in KINDS:
                results.setdefault(f"{kind} off", []).append(
                    measure([off], kind, args.clients, args.seconds))
                results.setdefault(f"{kind} on", []).append(
                    measure([on], kind, args.clients, args.seconds, redis_pid))
            results.setdefault("gateway 1 replica", []).append(
                measure([on], "gateway", args.clients, args.seconds, redis_pid))
            results.setdefault("gateway 2 replicas", []).append(
                measure([on, on2], "gateway", args.clients, args.seconds, redis_pid))
    rps = {k: statistics.median(f.rps for f in v) for k, v in results.items()}
    cpu = {k: statistics.median(f.cpu_us for f in v) for k, v in results.items()}
    print(f"{'figure':<24} {'req/s':>8} {'min':>8} {'max':>8}   {'CPU us/req':>10}")
    for k, v in results.items():
        print(f"{k:<24} {rps[k]:>8.0f} {min(f.rps for f in v):>8.0f} "
              f"{max(f.rps for f in v):>8.0f}   {cpu[k]:>10.0f}")
    for kind in KINDS:
        print(f"ratio {kind} on/off: req/s {rps[f'{kind} on'] / rps[f'{kind} off']:.2f}x, "
              f"CPU-bound (CPU per request off/on) {cpu[f'{kind} off'] / cpu[f'{kind} on']:.2f}x")
    print(f"ratio gateway 2 replicas / 1: "
          f"{rps['gateway 2 replicas'] / rps['gateway 1 replica']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
