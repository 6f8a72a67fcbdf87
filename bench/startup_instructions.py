"""Instructions to ready (issue 13's cold start): ``harkd run`` with 100 pipelines, first
start (empty state folder) and restart (the state folder a first start left), and bare
aiohttp (``bare.py``), each under valgrind's callgrind, which counts what every thread
runs in user space until the process exits at ready. On a shared host, where a start's
wall time swings by a third from run to run, this count moves by well under 1%, so it
tells a change's effect apart from noise.

As in ``core.py``, each file's bytes differ (every one is parsed on a first start) and
the log level is the default (a ``pipeline_loaded`` line per file). "Ready" is where
``core.py`` stops its clock: harkd's ``serve`` calling its ready
callback (the probe of ``startup_phases.py``), bare aiohttp's site listening; each process
then leaves with ``os._exit``. The interpreters run with ``PYTHONHASHSEED=0`` and their
modules compiled beforehand. System calls' kernel time and page faults are not counted (a
start's wall ratio has run 0.05-0.1 above its instruction ratio); Python under callgrind
runs about 50 times slower, so this takes a minute or two.

    .venv/bin/python bench/startup_instructions.py [--pipelines 100]
    .venv/bin/python bench/startup_instructions.py --tree /tmp/old/daemon  # another tree too
    .venv/bin/python bench/startup_instructions.py --parts  # and where the imports go

``--parts`` also counts the imports of a start one layer at a time (each row a process
that imports everything above it too, then leaves): the interpreter, what bare aiohttp
imports, each library harkd adds, harkd's own modules, PyYAML; the table gives each
layer's increment, so the starts' totals can be read against the layers they are made of.

Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind
from common import HARKD_PY, HERE, free_port, harkd_env, write_pipelines
from startup_phases import PROBE

#: startup_phases' probe, leaving at ready instead of stopping the daemon
READY_EXIT = PROBE.replace("started(address); self.stop()",
                           "started(address); import os; os._exit(0)")
BARE = """import gc; gc.disable()
import os, runpy, sys
import aiohttp.web_runner as runner
start = runner.TCPSite.start
async def listening(self):
    await start(self)
    os._exit(0)
runner.TCPSite.start = listening
sys.argv = sys.argv[1:]  # bare.py PORT
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def count(args: list[str], env: dict[str, str]) -> int:
    """Instructions callgrind counted for ``python -c ...args``."""
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        str(HARKD_PY), "-c", *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": "0", **env}, timeout=600)
    found = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if found is None:
        raise RuntimeError(f"no count from callgrind:\n{r.stderr[-2000:]}")
    return int(found[1])


#: the layers of a start's imports, in the order ``harkd run`` makes them (``--parts``)
PARTS = [
    ("the interpreter", "pass"),
    ("asyncio, argparse, json, logging (harkd.cli's own)",
     "import asyncio, argparse, json, logging"),
    ("aiohttp.web, jinja2.sandbox (what bare aiohttp imports)",
     "import aiohttp.web, jinja2.sandbox"),
    ("uvloop", "import uvloop"),
    ("anyio", "import anyio, anyio.abc"),
    ("anyio's asyncio backend (the first task group)", "import anyio._backends._asyncio"),
    ("watchfiles", "import watchfiles"),
    ("sqlite3 (the run log)", "import sqlite3"),
    ("harkd's modules of a start (daemon, template step, http trigger)",
     "import harkd.daemon, harkd.steps.basic, harkd.triggers.http"),
    ("PyYAML (a first start only)", "import harkd.yamlfile as y; y._import_yaml()"),
]


def parts() -> list[tuple[str, int]]:
    """Each layer of :data:`PARTS` with the instructions it adds to those above it."""
    rows, code, before = [], "import gc; gc.disable(); import os", 0
    for name, statement in PARTS:
        code += "; " + statement
        total = count([code + "; os._exit(0)"], {})
        rows.append((name, total - before))
        before = total
    return rows


def main() -> int:
    ap = callgrind.parser(__doc__, keep=False)
    ap.add_argument("--pipelines", type=int, default=100)
    ap.add_argument("--parts", action="store_true",
                    help="also count the imports of a start layer by layer")
    args = ap.parse_args()
    trees = callgrind.trees(args.tree)
    if trees is None:
        return 2
    bare = count([BARE, str(HERE / "bare.py"), str(free_port())], {})
    rows = [("bare aiohttp (bench/bare.py), to listening", bare)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipelines"
        write_pipelines(folder, args.pipelines, distinct=True)  # as core.py's
        for i, tree in enumerate(trees):
            state = Path(tmp) / f"state-{i}"
            env = {**harkd_env(state), "PYTHONPATH": tree}

            name = "this tree" if i == 0 else tree
            args_run = ["run", "--pipelines", str(folder), "--listen", "127.0.0.1:0"]
            rows.append((f"harkd ({name}), first start, empty state folder",
                         count([READY_EXIT, *args_run], env)))
            # That start left at ready, before it wrote the document cache (harkd writes
            # it just after): a start that stops as told writes it for the restart.
            subprocess.run([str(HARKD_PY), "-c", PROBE, *args_run], env={**os.environ, **env},
                           capture_output=True, check=True, timeout=120)
            rows.append((f"harkd ({name}), restart, documents cached",
                         count([READY_EXIT, *args_run], env)))
    print(f"Instructions to ready, {args.pipelines} pipelines (callgrind, all threads, user "
          "space)\n")
    print("| start | instructions | / bare |\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value / 1e6:,.1f}M | {value / bare:.3f}x |")
    if args.parts:
        print("\nThe imports of a start, layer by layer (each row's increment)\n")
        print("| layer | instructions | / bare |\n|---|---|---|")
        for name, value in parts():
            print(f"| {name} | {value / 1e6:,.1f}M | {value / bare:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
