"""Where a webhook request's CPU goes: cProfile of an in-process daemon under wrk.

Serves a one-step template pipeline (run log on, log level warning) in this process with
cProfile enabled, drives it with ``wrk`` from another process for a few seconds, and
prints the functions with the most own time and the most cumulative time.

    .venv/bin/python bench/profile_hot.py [--seconds 5] [--top 30] [--sort tottime]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harkd import logs
from harkd.testing import run_daemon

HOOK = """trigger: {http: {}}
concurrency: {max: 1024, mode: parallel}
steps:
  - template: "Hello, {{ input.name | default('world') }}!"
"""


async def profile(seconds: int, top: int, sort: str) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text('wrk.method = "POST"\nwrk.body = \'{"name": "Ada"}\'\n'
                       'wrk.headers["Content-Type"] = "application/json"\n')
        async with run_daemon(Path(tmp), {"hook": HOOK}) as d:
            logs.configure("warning")
            url = d.url("/hooks/hook")
            warm = await asyncio.create_subprocess_exec(
                wrk, "-t1", "-c32", "-d1s", "-s", str(lua), url,
                stdout=subprocess.DEVNULL)
            await warm.wait()
            prof = cProfile.Profile()
            prof.enable()
            proc = await asyncio.create_subprocess_exec(
                wrk, "-t1", "-c32", f"-d{seconds}s", "-s", str(lua), url,
                stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            prof.disable()
    print(out.decode())
    stats = pstats.Stats(prof)
    stats.sort_stats(sort).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    args = parser.parse_args()
    asyncio.run(profile(args.seconds, args.top, args.sort))


if __name__ == "__main__":
    main()
