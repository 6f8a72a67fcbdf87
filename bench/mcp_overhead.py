"""What harkd adds to one MCP tool call (issue 17).

Two processes of one stdio MCP server (``bench/mcp_echo_server.py``, an ``echo`` tool).
Sequential calls, in interleaved batches so drift hits all alike:

- direct (the baseline): the SDK alone, its ``stdio_client`` and ``ClientSession``;
- session: the SDK's ``ClientSession`` on harkd's connection (harkd's stdio transport);
- harkd: the tool as an ``llm`` step's tool loop calls it, ``invoke(Tool)`` on that same
  connection: argument validation against the tool's schema, the timeout, the size
  limit, the bookkeeping of calls in flight and the text conversion included.

Figures: the median per-call time of each (min-max over batches), the client process's
CPU time per call (which other processes on the machine disturb far less), and the
differences.
Then one call of a tool that answers 10 MB, through the SDK's own ``stdio_client``
(baseline) and through harkd's capped transport: how long the call took and how long the
event loop was busy meanwhile (a 1 ms ticker's longest gap, and the sum of its gaps over
5 ms).

    .venv/bin/python bench/mcp_overhead.py [--batches 20] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

SERVER = (sys.executable, str(Path(__file__).with_name("mcp_echo_server.py")))


async def main(batches: int, calls: int) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from harkd.tools import ToolContext
    from harkd.tools.mcp_client import MCPClients, ServerConfig
    from harkd.tools.registry import invoke

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{batches} batches of {calls} sequential calls each")
    params = StdioServerParameters(command=SERVER[0], args=list(SERVER[1:]))
    group = MCPClients({"echo": ServerConfig("echo", command=SERVER)})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as sdk:
        await sdk.initialize()
        try:
            tool = (await group.tools("mcp:echo"))["echo"]
            bare = group.server("echo")._session  # harkd's connection, used bare
            ctx = ToolContext()
            args = {"text": "hello"}

            async def direct() -> None:
                await sdk.call_tool("echo", args)

            async def session() -> None:
                await bare.call_tool("echo", args)

            async def harkd() -> None:
                await invoke(tool, args, ctx, 10.0)

            paths = {"direct": direct, "session": session, "harkd": harkd}
            for fn in paths.values():  # warm up
                for _ in range(20):
                    await fn()
            per: dict[str, list[float]] = {name: [] for name in paths}
            cpu: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(batches):
                for name, fn in paths.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(calls):
                        await fn()
                    per[name].append((time.perf_counter() - t0) / calls * 1000)
                    cpu[name].append((time.process_time() - c0) / calls * 1000)
        finally:
            await group.aclose()
    for name, label in (("direct", "SDK, its own stdio_client"),
                        ("session", "SDK session, harkd transport"),
                        ("harkd", "harkd tool (as the loop calls)")):
        v = per[name]
        print(f"{label:31} {statistics.median(v):.3f} ms per call "
              f"({min(v):.3f}-{max(v):.3f}), client CPU {statistics.median(cpu[name]):.3f} ms")
    med = {k: statistics.median(v) for k, v in per.items()}
    for base, label in (("direct", "the SDK on its own (the baseline)"),
                        ("session", "the bare session on the same connection")):
        diffs = [b - a for a, b in zip(per[base], per["harkd"], strict=True)]
        print(f"added by harkd over {label}: {med['harkd'] - med[base]:+.3f} ms per call "
              f"(median of per-batch differences {statistics.median(diffs):+.3f} ms, "
              f"ratio {med['harkd'] / med[base]:.3f}); client CPU "
              f"{statistics.median(cpu['harkd']) - statistics.median(cpu[base]):+.3f} ms")


async def _busy(call: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """(seconds the call took, longest loop stall ms, total stalls over 5 ms in ms)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):  # harkd refuses the answer: that is the point
        await call()
    took = time.perf_counter() - t0
    done.set()
    await ticker
    return took, max(gaps) * 1000, sum(g for g in gaps if g > 0.005) * 1000


async def huge_answer() -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from harkd.tools.mcp_client import MCPClients, ServerConfig

    params = StdioServerParameters(command=SERVER[0], args=list(SERVER[1:]))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        sdk = await _busy(lambda: s.call_tool("huge", {}))
    group = MCPClients({"echo": ServerConfig("echo", command=SERVER, timeout=120.0)})
    try:
        server = group.server("echo")
        await server.tools()
        ours = await _busy(lambda: server.call("huge", {}))
    finally:
        await group.aclose()
    for label, (took, worst, total) in (("SDK stdio_client (baseline)", sdk),
                                        ("harkd's capped transport", ours)):
        print(f"10 MB answer, {label:28} call {took * 1000:8.1f} ms, longest loop stall "
              f"{worst:7.1f} ms, loop stalled {total:8.1f} ms in all")
    print(f"loop stalled, harkd / SDK: {ours[2] / max(sdk[2], 0.001):.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50)
    a = ap.parse_args()
    asyncio.run(main(a.batches, a.calls))
    asyncio.run(huge_answer())
