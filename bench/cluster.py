"""Cluster mode (issue 14): throughput with ``cluster:`` on versus off, and two replicas
versus one, on the scripted upstream (``bench/upstream.py``, instant answers).

Each harkd is a real ``harkd run`` process; Redis is Debian's ``redis-server`` on a free
port without persistence. Off and on runs alternate, ``--repeats`` times each, and the
median requests/s of each is printed with the ratio on/off (the goal is >= 0.9x).

- ``webhook``: a one-step template pipeline (its path never touches Redis);
- ``chat``: a webhook whose ``llm`` step has a ``session`` (two Redis round trips a run:
  history read, turns pushed) through the gateway's deployment;
- ``gateway``: ``POST /v1/chat/completions`` on an alias whose deployment has ``rpm`` and
  ``max_concurrent`` (in a cluster: one Lua call to take the slot, one to give it back);
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    HARKD_PY,
    free_port,
    harkd_cmd,
    harkd_env,
    load,
    machine,
    serve,
)

CHAT = ("trigger: {http: {}}\nsteps:\n"
        "  - llm: {model: m, session: '{{ input.user }}', prompt: '{{ input.text }}'}\n")
HELLO = "trigger: {http: {}}\nsteps: [{template: 'Hello, {{ input.name }}!'}]\n"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
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
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def config(upstream: str, redis: str | None, replica: str) -> str:
    text = (f"models:\n  m: [{{model: openai/bench, api_base: '{upstream}/v1', api_key: k, "
            "rpm: 10000000, max_concurrent: 10000}]\n"
            "log: {level: warning}\n")
    if redis is not None:
        text += f"cluster: {{redis: '{redis}', replica: {replica}}}\n"
    return text


@contextlib.contextmanager
def harkd(root: Path, upstream: str, redis: str | None, replica: str = "r1") -> Iterator[str]:
    folder = root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hello.yaml").write_text(HELLO)
    (folder / "chat.yaml").write_text(CHAT)
    cfg = root / "harkd.yaml"
    cfg.write_text(config(upstream, redis, replica))
    port = free_port()
    with serve(harkd_cmd(folder, port, "--config", str(cfg)), port, "/readyz",
               env=harkd_env(root / "state")) as server:
        yield server.base


BODIES = {
    "webhook": ("/hooks/hello", {"name": "bench"}),
    "chat": ("/hooks/chat", {"user": "u", "text": "hi"}),
    "gateway": ("/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
}


async def rps(bases: list[str], kind: str, clients: int, seconds: float) -> float:
    path, body = BODIES[kind]
    share = max(1, clients // len(bases))
    runs = await asyncio.gather(*(load(base + path, share, duration=seconds, json_body=body)
                                  for base in bases))
    for run in runs:
        if run.errors:
            raise RuntimeError(f"{kind}: {run.errors} errors, statuses {run.statuses}")
    return sum(r.rps for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    print(f"# cluster bench: {machine()}; {args.clients} clients, {args.seconds:g}s runs, "
          f"{args.repeats} repeats (median req/s)")
    results: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        port = free_port()
        up = stack.enter_context(serve([str(HARKD_PY), str(HERE / "upstream.py"), str(port)],
                                       port, "/health"))
        redis = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        off = stack.enter_context(harkd(tmp / "off", up.base, None))
        on = stack.enter_context(harkd(tmp / "on", up.base, redis, "r1"))
        on2 = stack.enter_context(harkd(tmp / "on2", up.base, redis, "r2"))
        for kind in ("webhook", "chat", "gateway"):
            asyncio.run(rps([off], kind, args.clients, 0.5))  # warm up both
            asyncio.run(rps([on], kind, args.clients, 0.5))
        for _ in range(args.repeats):
            for kind in ("webhook", "chat", "gateway"):
                results.setdefault(f"{kind} off", []).append(
                    asyncio.run(rps([off], kind, args.clients, args.seconds)))
                results.setdefault(f"{kind} on", []).append(
                    asyncio.run(rps([on], kind, args.clients, args.seconds)))
            results.setdefault("gateway 1 replica", []).append(
                asyncio.run(rps([on], "gateway", args.clients, args.seconds)))
            results.setdefault("gateway 2 replicas", []).append(
                asyncio.run(rps([on, on2], "gateway", args.clients, args.seconds)))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{'figure':<22} {'req/s':>9}  {'min':>9}  {'max':>9}")
    for k, v in results.items():
        print(f"{k:<22} {med[k]:>9.0f}  {min(v):>9.0f}  {max(v):>9.0f}")
    for kind in ("webhook", "chat", "gateway"):
        print(f"ratio {kind} on/off: {med[f'{kind} on'] / med[f'{kind} off']:.2f}x")
    print(f"ratio gateway 2 replicas / 1: "
          f"{med['gateway 2 replicas'] / med['gateway 1 replica']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
