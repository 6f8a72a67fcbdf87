"""1,000 concurrent WebSocket clients, each streaming a reply from a scripted upstream.

harkd runs as a child process (``harkd run``); the scripted OpenAI-compatible upstream
(:class:`harkd.testing_upstream.ScriptedUpstream`, streaming its echo in small chunks) and
the clients run in this process. Printed: messages delivered, errors, p50/p99 time to the
first delta and to the result, and the daemon's memory per idle connection. Baseline in
the same run: the same 1,000 streams read straight from the upstream, no harkd between.

    .venv/bin/python bench/websocket_fanout.py [--clients 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from harkd.testing import free_port
from harkd.testing_upstream import ScriptedUpstream

PIPELINE = """
trigger: {websocket: {max_connections: 5000}}
concurrency: {max: 5000}
steps:
  - llm: {model: default, prompt: "{{ input }}", stream: true}
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def one(http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
              text: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    await ws.send_str(text)
    first = None
    deltas = 0
    while True:
        msg = await ws.receive(timeout=60)
        data = json.loads(msg.data)
        if data["type"] == "delta":
            deltas += 1
            if first is None:
                first = time.perf_counter() - t0
        elif data["type"] == "result":
            return first or 0.0, time.perf_counter() - t0, deltas
        else:
            raise RuntimeError(data.get("message"))


async def baseline(up: ScriptedUpstream, n: int) -> list[float]:
    """Time to first chunk reading the upstream's streams directly."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        async def stream(i: int) -> float:
            t0 = time.perf_counter()
            body = {"model": "m", "stream": True,
                    "messages": [{"role": "user", "content": f"hello number {i} a b c d"}]}
            async with http.post(up.v1 + "/chat/completions", json=body) as r:
                first = None
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"content"' in line and first is None:
                        first = time.perf_counter() - t0
                return first or 0.0

        return list(await asyncio.gather(*(stream(i) for i in range(n))))


async def main(clients: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="harkd-wsbench-"))
    (root / "pipelines").mkdir()
    (root / "pipelines" / "chat.yaml").write_text(PIPELINE)
    async with ScriptedUpstream() as up:
        up.record = False
        (root / "harkd.yaml").write_text(
            f"models:\n  default:\n    - model: openai/m\n      api_base: {up.v1}\n"
            "      max_concurrent: 5000\nrouter: {timeout: 60s, queue_timeout: 60s}\n")
        port = free_port()
        env = {**os.environ, "HARKD_STATE": str(root / "state"), "HARKD_LOG_LEVEL": "warning"}
        proc = subprocess.Popen([sys.executable, "-m", "harkd", "run", "--config",
                                 str(root / "harkd.yaml"), "--pipelines", str(root / "pipelines"),
                                 "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as probe:
                for _ in range(200):
                    try:
                        async with probe.get(base + "/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
            direct = await baseline(up, clients)

            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as http:
                # warm up: one run, so imports and pools are in place before measuring
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws/chat")
                await one(http, ws, "warm up")
                await ws.close()
                await asyncio.sleep(0.5)
                before = rss_kb(proc.pid)
                sem = asyncio.Semaphore(200)

                async def connect() -> aiohttp.ClientWebSocketResponse:
                    async with sem:
                        return await http.ws_connect(f"ws://127.0.0.1:{port}/ws/chat",
                                                     compress=0)

                socks = await asyncio.gather(*(connect() for _ in range(clients)))
                await asyncio.sleep(1.0)
                idle = rss_kb(proc.pid)
                t0 = time.perf_counter()
                results = await asyncio.gather(
                    *(one(http, ws, f"hello number {i} a b c d") for i, ws in enumerate(socks)),
                    return_exceptions=True)
                wall = time.perf_counter() - t0
                ok = [r for r in results if isinstance(r, tuple)]
                errors = [r for r in results if not isinstance(r, tuple)]
                await asyncio.gather(*(ws.close() for ws in socks))
        finally:
            proc.terminate()
            proc.wait(30)
    ttft = [r[0] for r in ok]
    total = [r[1] for r in ok]
    print(f"websocket fan-out: {clients} clients, {os.cpu_count()} cores")
    print(f"  delivered results      {len(ok)} / {clients}   errors {len(errors)}"
          + (f"  (first: {errors[0]!r})" if errors else ""))
    print(f"  deltas per reply       {statistics.mean([r[2] for r in ok]):.1f}" if ok else "")
    print(f"  time to first delta    p50 {pct(ttft, 50) * 1000:.1f} ms   "
          f"p99 {pct(ttft, 99) * 1000:.1f} ms")
    print(f"  time to result         p50 {pct(total, 50) * 1000:.1f} ms   "
          f"p99 {pct(total, 99) * 1000:.1f} ms   wall {wall:.2f} s")
    print(f"  baseline (upstream direct, same concurrency) first chunk "
          f"p50 {pct(direct, 50) * 1000:.1f} ms   p99 {pct(direct, 99) * 1000:.1f} ms"
          f"   ratio p99 {pct(ttft, 99) / max(pct(direct, 99), 1e-9):.2f}x")
    print(f"  daemon RSS             {before / 1024:.1f} MB before, {idle / 1024:.1f} MB with "
          f"{clients} idle connections: {(idle - before) / clients:.1f} KB per connection")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=1000)
    asyncio.run(main(p.parse_args().clients))
