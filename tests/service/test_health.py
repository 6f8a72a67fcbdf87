"""`harkd health` probes /healthz: the container's health check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harkd.health import healthz_url
from harkd.settings import Settings
from harkd.testing import free_port, spawn_daemon


def _health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "harkd", "health", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_healthy_daemon_by_url_and_by_listen_setting(tmp_path: Path) -> None:
    with spawn_daemon(tmp_path, {"echo": "trigger: {http: {}}\nsteps: [{template: hi}]\n"}) as d:
        by_url = _health("--url", d.url("/healthz"))
        assert by_url.returncode == 0, by_url.stderr
        assert by_url.stdout.strip() == f"{d.url('/healthz')} ok"
        listen = d.base.removeprefix("http://")
        by_listen = _health("--quiet", env={"HARKD_LISTEN": listen})
        assert by_listen.returncode == 0, by_listen.stderr
        assert by_listen.stdout == ""


def test_nothing_listening_is_unhealthy_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    proc = _health("--url", url, "--timeout", "5")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"harkd: unhealthy: {url}: ")


def test_wildcard_listen_is_probed_on_loopback() -> None:
    assert healthz_url(Settings(listen="0.0.0.0:8420")) == "http://127.0.0.1:8420/healthz"
    assert healthz_url(Settings(listen="[::]:8420")) == "http://[::1]:8420/healthz"
    assert healthz_url(Settings(listen="10.0.0.5:1")) == "http://10.0.0.5:1/healthz"
