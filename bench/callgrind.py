"""Servers under valgrind's callgrind, for the ``*_instructions.py`` benchmarks: start
them (each in its own session), wait until each answers its ready URL, let a driver send
requests, stop them and read the instructions each one ran (every thread, user space).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common import HARKD_PY, ROOT, http_status


@dataclass(frozen=True)
class Spec:
    """A server to start: its command, its environment on top of ours, and the URL that
    answers 200 once it serves."""

    cmd: list[str]
    env: dict[str, str]
    ready: str


def wait_ready(proc: subprocess.Popen[bytes], url: str, seconds: float, step: float) -> None:
    """Wait until ``url`` answers 200 (the server ``proc`` serves it)."""
    deadline = time.monotonic() + seconds
    while http_status(url, timeout=5) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not start")
        time.sleep(step)


def parser(doc: str, *, keep: bool = True) -> argparse.ArgumentParser:
    """The command line the scripts share: ``--tree`` (and ``--keep``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[],
                    help="another harkd's daemon/ folder to count too (PYTHONPATH)")
    if keep:
        ap.add_argument("--keep", type=Path, default=None,
                        help="a folder to keep callgrind's files in, one per thread")
    return ap


def trees(others: Sequence[str]) -> list[str] | None:
    """This checkout's ``daemon/`` and ``others``, each compiled; None (said on stderr)
    when valgrind is not installed. A start that compiles modules (a fresh worktree, a
    changed file) would count the compiling in one run and not in the other (by up to
    100k a webhook request when the whole tree was fresh)."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return None
    found = [str(ROOT / "daemon"), *others]
    for tree in found:
        subprocess.run([str(HARKD_PY), "-m", "compileall", "-q", tree], check=True,
                       stdout=subprocess.DEVNULL)
    return found


def run(specs: Sequence[Spec], drive: Callable[[], None], *, counted: bool = True,
        keep: Sequence[str | None] = ()) -> list[int]:
    """Start ``specs`` in order (under callgrind when ``counted``), wait for each to be
    ready, ``drive()``, wait a second, stop them all; the instructions each one ran (none
    when not ``counted``). ``keep`` gives, per server, where to write callgrind's files,
    one per thread (``<keep>.<pid>-<thread>``)."""
    with contextlib.ExitStack() as stack:
        started: list[tuple[subprocess.Popen[bytes], Path | None]] = []
        for i, spec in enumerate(specs):
            out = keep[i] if i < len(keep) else None
            log: Path | None = None
            prefix: list[str] = []
            if counted:
                log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "valgrind.log"
                prefix = ["valgrind", "--tool=callgrind", f"--log-file={log}", *(
                    ["--separate-threads=yes", f"--callgrind-out-file={out}.%p"]
                    if out is not None else ["--callgrind-out-file=/dev/null"])]
            proc = subprocess.Popen([*prefix, *spec.cmd], env={**os.environ, **spec.env},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            stack.callback(_stop, proc)
            started.append((proc, log))
            wait_ready(proc, spec.ready, 300 if counted else 60, 0.5 if counted else 0.1)
        drive()
        if counted:
            time.sleep(1.0)
        for proc, _ in started:
            _stop(proc)
        return [_collected(log) for _, log in started if log is not None]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(120)


def _collected(log: Path) -> int:
    text = log.read_text(errors="replace")
    found = re.search(r"Collected\s*:\s*(\d+)", text)
    if found is None:
        raise RuntimeError(f"no count from callgrind:\n{text[-2000:]}")
    return int(found[1])
