"""What harkd adds to one MCP tool call (issue 17).

One stdio MCP server process (``bench/mcp_echo_server.py``, one ``echo`` tool) and one
connection to it, harkd's (``harkd.tools.mcp_client``). Sequential calls, in interleaved
batches so drift hits both alike:

- direct (the baseline): the SDK's ``ClientSession.call_tool`` on that session;
- harkd: the tool as an ``llm`` step's tool loop calls it, ``invoke(Tool)``: argument
  validation against the tool's schema, the timeout, the size limit, the bookkeeping of
  calls in flight and the text conversion included.

Figures: the median per-call time of each (min-max over batches) and the difference.

    .venv/bin/python bench/mcp_overhead.py [--batches 20] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

SERVER = (sys.executable, str(Path(__file__).with_name("mcp_echo_server.py")))


async def main(batches: int, calls: int) -> None:
    from harkd.tools import ToolContext
    from harkd.tools.mcp_client import MCPClients, ServerConfig
    from harkd.tools.registry import invoke

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{batches} batches of {calls} sequential calls each")
    group = MCPClients({"echo": ServerConfig("echo", command=SERVER)})
    try:
        tool = (await group.tools("mcp:echo"))["echo"]
        session = group.server("echo")._session  # the same connection, used bare
        ctx = ToolContext()
        args = {"text": "hello"}

        async def direct() -> None:
            await session.call_tool("echo", args)

        async def harkd() -> None:
            await invoke(tool, args, ctx, 10.0)

        for fn in (direct, harkd):  # warm up both connections
            for _ in range(20):
                await fn()
        per: dict[str, list[float]] = {"direct": [], "harkd": []}
        for _ in range(batches):
            for name, fn in (("direct", direct), ("harkd", harkd)):
                t0 = time.perf_counter()
                for _ in range(calls):
                    await fn()
                per[name].append((time.perf_counter() - t0) / calls * 1000)
    finally:
        await group.aclose()
    for name, label in (("direct", "direct SDK call (baseline)"),
                        ("harkd", "through harkd's MCP client")):
        v = per[name]
        print(f"{label:30} {statistics.median(v):.3f} ms per call "
              f"({min(v):.3f}-{max(v):.3f})")
    d, h = statistics.median(per["direct"]), statistics.median(per["harkd"])
    diffs = [b - a for a, b in zip(per["direct"], per["harkd"], strict=True)]
    print(f"added by harkd: {h - d:+.3f} ms per call (median of per-batch differences "
          f"{statistics.median(diffs):+.3f} ms); ratio harkd / direct {h / d:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50)
    a = ap.parse_args()
    asyncio.run(main(a.batches, a.calls))
