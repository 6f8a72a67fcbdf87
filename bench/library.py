"""harkd as a library (issue 8): ``import harkd`` cost, and ``harkd.ask`` overhead.

- import time and memory of ``import harkd`` in a fresh interpreter (median of repeats),
  against a bare ``python -c pass`` measured in the same run; and which heavy modules the
  import pulled in (goal: none);
- ``harkd.ask_async`` against a direct pooled aiohttp call to the same scripted upstream
  (``bench/upstream.py``), sequential calls, p50 and p99 of each and the difference
  (goal: under 0.3 ms at p50).

``python bench/library.py [--calls N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import HARKD_PY, Spread, cores, free_port, percentile, serve  # noqa: E402

PROBE = """
import resource, sys, time
t0 = time.perf_counter()
{body}
dt = time.perf_counter() - t0
heavy = [m for m in ("aiohttp", "jinja2", "litellm", "llama_cpp", "numpy", "yaml")
         if m in sys.modules]
print(dt * 1000, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ",".join(heavy))
"""


def probe(body: str) -> tuple[float, float, str]:
    out = subprocess.run([str(HARKD_PY), "-c", PROBE.format(body=body)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), out[2] if len(out) > 2 else ""


def imports(repeats: int) -> None:
    base = [probe("pass") for _ in range(repeats)]
    lib = [probe("import harkd") for _ in range(repeats)]
    full = [probe("import harkd; harkd.ask; harkd.template") for _ in range(repeats)]
    b_ms, l_ms, f_ms = (Spread.of([x[0] for x in r]) for r in (base, lib, full))
    b_mb, l_mb, f_mb = (Spread.of([x[1] for x in r]) for r in (base, lib, full))
    print(f"cores: {cores()}")
    print(f"import harkd: {l_ms.text(' ms', 2)} (bare interpreter {b_ms.text(' ms', 2)}), "
          f"max RSS {l_mb.text(' MB')} vs {b_mb.text(' MB')} bare: "
          f"+{l_mb.median - b_mb.median:.1f} MB; heavy modules: {lib[0][2] or 'none'}")
    print(f"import harkd + resolve ask/template: {f_ms.text(' ms', 1)}, "
          f"+{f_mb.median - b_mb.median:.1f} MB over bare; modules: {full[0][2] or 'none'}")


async def overhead(calls: int, base: str) -> None:
    import aiohttp

    import harkd
    from harkd.runtime import Runtime
    from harkd.settings import Settings

    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    direct: list[float] = []
    through: list[float] = []
    rt = Runtime(Settings(models={"default": [
        {"model": "openai/bench", "api_base": base + "/v1", "api_key": "x"}]}))
    async with aiohttp.ClientSession() as session:

        async def one_direct() -> None:
            async with session.post(base + "/v1/chat/completions", json=body) as r:
                json.loads(await r.read())

        async def one_harkd() -> None:
            await harkd.ask_async("hi", runtime=rt)

        for _ in range(50):  # warm both pools up
            await one_direct()
            await one_harkd()
        # Interleave blocks so that load from elsewhere on the machine hits both alike.
        for _ in range(max(1, calls // 50)):
            for fn, out in ((one_direct, direct), (one_harkd, through)):
                for _ in range(50):
                    t0 = time.perf_counter()
                    await fn()
                    out.append((time.perf_counter() - t0) * 1000)
    await rt.aclose()
    d50, h50 = percentile(direct, 50), percentile(through, 50)
    print(f"direct pooled aiohttp: p50 {d50:.3f} ms, p99 {percentile(direct, 99):.3f} ms "
          f"({calls} calls)")
    print(f"harkd.ask_async:       p50 {h50:.3f} ms, p99 {percentile(through, 99):.3f} ms")
    print(f"overhead at p50: {h50 - d50:.3f} ms (ratio {h50 / d50:.2f}x direct; goal < 0.3 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    imports(args.repeats)
    port = free_port()
    with serve([str(HARKD_PY), str(HERE / "upstream.py"), str(port)], port, "/health") as up:
        asyncio.run(overhead(args.calls, up.base))


if __name__ == "__main__":
    main()
