"""Where `harkd run`'s start with 100 pipelines goes (issue 13): the phases up to ready,
and the import time of every module bare aiohttp (bench/bare.py) does not import.

    python bench/startup_phases.py [--runs 5] [--first]

Each run is a child process started as ``python -m harkd run`` would be (the collector
off until ready), timing its phases in-process; ``-X importtime`` gives the imports. By
default the state folder is warmed first, so the figures are a restart's; ``--first``
gives each run an empty state folder. Medians over the runs; importtime's own overhead
inflates the import figures by about a third, so read them as shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HARKD_PY, HERE, write_pipelines

PROBE = r'''
import gc; gc.disable()
import json, sys, time
T0 = time.perf_counter()
marks = {}
def mark(name): marks.setdefault(name, (time.perf_counter() - T0) * 1000)
import harkd.cli as cli
mark("CLI imported (asyncio, argparse)")
import harkd.daemon as d
mark("the daemon's modules (aiohttp, anyio, harkd)")
scan = d.Catalog.scan
async def timed_scan(self):
    mark("listener, state folder, entry points, run log, watcher"); await scan(self)
d.Catalog.scan = timed_scan
serve = d.Daemon.serve
async def probe(self, started=None):
    def ready(address):
        mark("loading and binding the pipelines (importing their kinds)")
        started(address); self.stop()
    return await serve(self, ready)
d.Daemon.serve = probe
code = cli.main(sys.argv[1:], collect=True)
print("PHASES " + json.dumps(marks), file=sys.stderr)
'''

#: what bench/bare.py imports
BARE = "import gc; gc.disable(); import aiohttp.web, jinja2.sandbox, json, sys"


def importtime(stderr: str) -> dict[str, int]:
    out = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            out[m.group(4)] = int(m.group(1))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--first", action="store_true", help="an empty state folder each run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "pipelines"
        write_pipelines(folder, 100, distinct=True)
        probe = root / "bin" / "probe.py"
        probe.parent.mkdir()
        probe.write_text(PROBE)
        # The probe's folder is sys.path's first, as an installed harkd's bin/ is: dated
        # back like one, so that harkd may keep its scan of the entry points.
        os.utime(probe.parent, ns=(10**18, 10**18))
        phases: dict[str, list[float]] = collections.defaultdict(list)
        imports: list[dict[str, int]] = []
        for i in range(args.runs + (0 if args.first else 1)):
            # Phases from a plain run, imports from one under -X importtime (its own
            # writes slow every import), each on its own state folder when --first.
            runs = []
            for flags in ((), ("-X", "importtime")):
                state = root / (f"state-{i}-{len(flags)}" if args.first else "state")
                cmd = [str(HARKD_PY), *flags, str(probe), "run", "--pipelines",
                       str(folder), "--state", str(state), "--listen", "127.0.0.1:0",
                       "--log-level", "warning"]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                   cwd=root, env={"HARKD_CONFIG": "", "PATH": "/usr/bin:/bin"})
                if r.returncode != 0 or "PHASES " not in r.stderr:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                runs.append(r.stderr)
            if not args.first and i == 0:
                continue  # the runs that fill the state folder's cache
            line = next(x for x in runs[0].splitlines() if x.startswith("PHASES "))
            marks = json.loads(line[len("PHASES "):])
            last = 0.0
            for name, at in sorted(marks.items(), key=lambda kv: kv[1]):
                phases[name].append(at - last)
                last = at
            phases["total to ready (after the interpreter's own start)"].append(last)
            imports.append(importtime(runs[1]))
        bare = importtime(subprocess.run([str(HARKD_PY), "-X", "importtime", "-c", BARE],
                                         capture_output=True, text=True).stderr)
    what = "first start (empty state folder)" if args.first else "restart (documents cached)"
    print(f"## harkd run, 100 pipelines, {what}: phases (wall ms, median of {args.runs})\n")
    for name, values in phases.items():
        print(f"{statistics.median(values):7.1f}  {name}")
    extra: collections.Counter[str] = collections.Counter()
    for mod in set().union(*imports) - set(bare):
        top = "harkd (its own modules)" if mod.startswith("harkd") else mod.split(".")[0]
        extra[top] += int(statistics.median(run.get(mod, 0) for run in imports))
    print(f"\n## imports {HERE.name}/bare.py does not make (self time, -X importtime): "
          f"{sum(extra.values()) / 1000:.1f} ms\n")
    for name, us in extra.most_common(15):
        print(f"{us / 1000:7.1f}  {name}")
    print("\n(the step and trigger kinds are imported through importlib and do not show "
          "here; see the loading phase)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
