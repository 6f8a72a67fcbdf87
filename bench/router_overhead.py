"""Router overhead and throughput, side by side in one run (issue 3).

Against one scripted upstream in its own process (``harkd.testing_upstream``):

- direct: a pooled aiohttp POST of the same chat body, JSON parsed (the floor);
- harkd: ``Router.complete`` on an alias whose one deployment is that upstream;
- litellm: ``litellm.Router.acompletion`` (from ``bench/.venv-peers/litellm``, if present),
  run in that venv by this same file with ``--peer``.

Figures: per-call latency p50/p99 of sequential calls and the router's added cost over
direct (interleaved batches, so drift hits both alike); the router's own CPU cost with an
instant in-process backend; calls/s at 100 concurrent. ``--local`` adds the embedded
model's time to first token through the router and through the gateway.

    .venv/bin/python bench/router_overhead.py [--calls 3000] [--local]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PY = HERE / ".venv-peers" / "litellm" / "bin" / "python"
MESSAGES = [{"role": "user", "content": "Say hello."}]
CONCURRENCY = 100

Call = Callable[[], Awaitable[Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


CPU: dict[str, list[float]] = {}


async def latencies(calls: dict[str, Call], n: int, batch: int = 100) -> dict[str, list[float]]:
    """Per-call wall times of each client, in interleaved batches; the client process's
    CPU time per call of each batch goes to ``CPU`` (steadier on a busy machine)."""
    out: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():  # warm up pools and code paths
        for _ in range(200):
            await fn()
    for _ in range(max(1, n // batch)):
        for name, fn in calls.items():
            samples = out[name]
            c0 = time.process_time()
            for _ in range(batch):
                t0 = time.perf_counter()
                await fn()
                samples.append(time.perf_counter() - t0)
            CPU.setdefault(name, []).append((time.process_time() - c0) / batch)
    return out


async def throughput(fn: Call, total: int, concurrency: int = CONCURRENCY) -> float:
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await fn()

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up round
    left = total
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0)


def direct_call(base: str) -> tuple[Call, Any]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    body = json.dumps({"model": "bench", "messages": MESSAGES}).encode()
    headers = {"Content-Type": "application/json"}

    async def call() -> str:
        async with session.post(base + "/chat/completions", data=body,
                                headers=headers) as resp:
            doc = json.loads(await resp.read())
        return str(doc["choices"][0]["message"]["content"])

    return call, session


async def run_peer(base: str, n: int, total: int) -> dict[str, Any]:
    """Inside the LiteLLM venv: direct and litellm.Router, the same way."""
    import litellm

    litellm.suppress_debug_info = True
    router = litellm.Router(model_list=[{"model_name": "bench", "litellm_params": {
        "model": "openai/bench", "api_base": base, "api_key": "none"}}], num_retries=0)

    async def via_litellm() -> str:
        resp = await router.acompletion(model="bench", messages=MESSAGES)
        return str(resp.choices[0].message.content)

    direct, session = direct_call(base)
    try:
        lat = await latencies({"direct": direct, "litellm": via_litellm}, n)
        rate = await throughput(via_litellm, total)
    finally:
        await session.close()
    return {"direct_p50": pct(lat["direct"], 0.5), "p50": pct(lat["litellm"], 0.5),
            "p99": pct(lat["litellm"], 0.99), "direct_p99": pct(lat["direct"], 0.99),
            "throughput": rate, "version": importlib.metadata.version("litellm")}


async def run_harkd(base: str, n: int, total: int) -> dict[str, Any]:
    from harkd import logs
    from harkd.router import ChatRequest, Router
    from harkd.router.types import Completion, Usage
    from harkd.settings import Settings

    logs.configure("error")
    settings = Settings(models={"bench": [{"model": "openai/bench", "api_base": base}]})
    router = Router.from_settings(settings)
    request = ChatRequest(model="bench", messages=tuple(MESSAGES))

    async def via_harkd() -> str:
        return (await router.complete(request)).text

    direct, session = direct_call(base)

    class Instant:
        async def prepare(self, dep: Any) -> str:
            return base

        async def complete(self, dep: Any, b: str, req: Any) -> Completion:
            return Completion("hi", Usage(1, 1))

    cpu_router = Router.from_settings(settings)
    cpu_router._backends["openai"] = Instant()  # type: ignore[assignment]

    async def router_only() -> Any:
        return await cpu_router.complete(request)

    try:
        lat = await latencies({"direct": direct, "harkd": via_harkd}, n)
        cpu = (await latencies({"cpu": router_only}, n))["cpu"]
        rate_direct = await throughput(direct, total)
        rate_harkd = await throughput(via_harkd, total)
    finally:
        await session.close()
        await router.aclose()
        await cpu_router.aclose()
    return {"direct_p50": pct(lat["direct"], 0.5), "direct_p99": pct(lat["direct"], 0.99),
            "p50": pct(lat["harkd"], 0.5), "p99": pct(lat["harkd"], 0.99),
            "cpu_p50": pct(cpu, 0.5), "cpu_p99": pct(cpu, 0.99),
            "throughput": rate_harkd, "direct_throughput": rate_direct,
            "cpu_direct": statistics.median(CPU["direct"]),
            "cpu_harkd": statistics.median(CPU["harkd"]),
            "overhead_p50": statistics.median(lat["harkd"]) - statistics.median(lat["direct"])}


async def run_local() -> dict[str, Any]:
    """Time to first token of the embedded model: through the router and the gateway."""
    import tempfile

    import openai

    from harkd.core.registry import default
    from harkd.router import ChatRequest
    from harkd.services import Services
    from harkd.settings import Settings
    from harkd.testing import run_daemon

    question = ({"role": "user", "content": "What is the capital of France?"},)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        services = Services(Settings(state=Path(tmp) / "state"), default())
        try:
            ttfts = []
            for i in range(6):
                t0 = time.perf_counter()
                stream = services.router.stream(ChatRequest(model="default", messages=question))
                async for _ in stream:
                    ttfts.append(time.perf_counter() - t0)
                    break
                await stream.aclose()
                if i == 0:
                    out["router_cold_ttft"] = ttfts.pop()
            out["router_warm_ttft_p50"] = statistics.median(ttfts)
        finally:
            await services.aclose()
        async with run_daemon(Path(tmp)) as d:
            client: Any = openai.AsyncOpenAI(base_url=d.url("/v1"), api_key="x", max_retries=0)
            ttfts = []
            for _ in range(6):
                t0 = time.perf_counter()
                s = await client.chat.completions.create(model="default",
                                                         messages=list(question), stream=True)
                async for chunk in s:
                    if chunk.choices and chunk.choices[0].delta.content:
                        ttfts.append(time.perf_counter() - t0)
                        break
                await s.close()
            out["gateway_ttft_p50"] = statistics.median(ttfts[1:])
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.3f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000, help="sequential calls per client")
    ap.add_argument("--total", type=int, default=5000, help="calls in the throughput run")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--local", action="store_true", help="also the embedded model's TTFT")
    args = ap.parse_args()
    if args.peer:
        print(json.dumps(asyncio.run(run_peer(args.base, args.calls, args.total))))
        return 0

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    server = subprocess.Popen([sys.executable, "-m", "harkd.testing_upstream", str(port)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        base = f"http://127.0.0.1:{port}/v1"
        h = asyncio.run(run_harkd(base, args.calls, args.total))
        peer: dict[str, Any] | None = None
        if PEER_PY.exists():
            proc = subprocess.run([str(PEER_PY), __file__, "--peer", "--base", base,
                                   "--calls", str(args.calls // 3), "--total",
                                   str(args.total // 5)], capture_output=True, text=True)
            if proc.returncode == 0:
                peer = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                print("litellm peer failed:", proc.stderr[-500:], file=sys.stderr)
    finally:
        server.terminate()
        server.wait()

    print(f"cores: {os.cpu_count()}, sequential calls: {args.calls}, "
          f"throughput: {args.total} calls at {CONCURRENCY} concurrent")
    print(f"direct aiohttp      p50 {ms(h['direct_p50'])}  p99 {ms(h['direct_p99'])}")
    print(f"harkd Router        p50 {ms(h['p50'])}  p99 {ms(h['p99'])}")
    print(f"harkd overhead      p50 {ms(h['p50'] - h['direct_p50'])}  "
          f"p99 {ms(h['p99'] - h['direct_p99'])}  (goal < 0.3 ms at p50)")
    print(f"client CPU per call direct {ms(h['cpu_direct'])}  harkd {ms(h['cpu_harkd'])}  "
          f"added {ms(h['cpu_harkd'] - h['cpu_direct'])}")
    print(f"router CPU alone    p50 {ms(h['cpu_p50'])}  p99 {ms(h['cpu_p99'])}  "
          "(instant in-process backend)")
    print(f"throughput          direct {h['direct_throughput']:.0f}/s  "
          f"harkd {h['throughput']:.0f}/s")
    if peer is not None:
        print(f"litellm.Router {peer['version']}  p50 {ms(peer['p50'])}  p99 {ms(peer['p99'])}  "
              f"overhead p50 {ms(peer['p50'] - peer['direct_p50'])}  "
              f"throughput {peer['throughput']:.0f}/s")
        print(f"harkd / litellm.Router throughput: {h['throughput'] / peer['throughput']:.1f}x "
              "(goal >= 10x)")
    else:
        print("litellm.Router: not measured (bench/setup_peers.sh installs it)")
    if args.local:
        local = asyncio.run(run_local())
        print(f"embedded model TTFT: router cold {ms(local['router_cold_ttft'])}, "
              f"warm p50 {ms(local['router_warm_ttft_p50'])}; "
              f"gateway warm p50 {ms(local['gateway_ttft_p50'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
