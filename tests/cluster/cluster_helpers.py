"""Helpers of the cluster tests: a real ``redis-server`` child process and the
``harkd.yaml`` of one replica."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from harkd.testing import free_port
from harkd.testing_upstream import ScriptedUpstream


class RedisServer:
    """One ``redis-server`` child process on a fixed port; :meth:`kill` and
    :meth:`start` simulate an outage (it comes back empty: ``--save ''``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is missing: scripts/setup installs it (DEBS)"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def cluster_config(redis: str, prefix: str, replica: str, upstream: ScriptedUpstream,
                   *, deployment: str = "", router: str = "", extra: str = "",
                   timeout: str = "500ms") -> str:
    """A ``harkd.yaml`` of one replica: alias ``m`` on the scripted upstream."""
    return (f"cluster: {{redis: '{redis}', replica: {replica}, prefix: {prefix}, "
            f"timeout: {timeout}, probe: 200ms}}\n"
            f"models:\n  m: [{{model: openai/m1, api_base: '{upstream.v1}', api_key: k"
            f"{', ' + deployment if deployment else ''}}}]\n"
            f"router: {{retries: 0, backoff: 1ms{', ' + router if router else ''}}}\n"
            + extra)


def overlap(upstream: ScriptedUpstream, model: str, delay: float) -> int:
    """The most requests to ``model`` that were surely in flight at once when each one
    sleeps ``delay`` before answering: those that arrived within ``delay`` of each other
    (a lower bound of the real peak, so ``<= limit`` checks a limit)."""
    at = sorted(r.at for r in upstream.requests if r.model == model)
    peak, lo = 0, 0
    for hi, t in enumerate(at):
        while at[lo] <= t - delay:
            lo += 1
        peak = max(peak, hi - lo + 1)
    return peak
