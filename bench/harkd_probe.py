"""Run the ``harkd`` command line with benchmark instrumentation, chosen by environment:

- ``BENCH_PROBE_OUT=FILE``: at exit, write which heavy modules were imported (JSON).
- ``BENCH_NO_RUNLOG=1``: a diagnostic variant whose run log records nothing, to measure
  what writing the run log costs a webhook (never how harkd ships).

``python bench/harkd_probe.py run --pipelines DIR --listen HOST:PORT``
"""

from __future__ import annotations

import atexit
import json
import os
import sys

HEAVY = ("litellm", "openai", "faster_whisper", "piper", "llama_cpp", "torch", "ctranslate2")


def _dump(path: str) -> None:
    mods = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    with open(path, "w") as f:
        json.dump({"heavy": mods, "modules": len(sys.modules)}, f)


def main() -> int:
    if out := os.environ.get("BENCH_PROBE_OUT"):
        atexit.register(_dump, out)
    if os.environ.get("BENCH_NO_RUNLOG") == "1":
        from harkd import runlog

        runlog.RunLog.run_started = lambda self, run: None  # type: ignore[method-assign]
        runlog.RunLog.run_finished = lambda self, run, result: None  # type: ignore[method-assign]
    from harkd.cli import main as harkd_main

    return harkd_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
