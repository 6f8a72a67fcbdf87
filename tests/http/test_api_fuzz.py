"""schemathesis against the daemon's own /api/openapi.json: no request makes a 500."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harkd.testing import spawn_daemon

REPO = Path(__file__).resolve().parents[2]


def test_no_server_errors(tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("schemathesis is not installed (it is in harkd's dev extra)")
    files = {name: (REPO / "pipelines" / f"{name}.yaml").read_text()
             for name in ("echo", "shout", "greet")}
    with spawn_daemon(tmp_path, files) as d:
        proc = subprocess.run(
            [exe, "run", d.url("/api/openapi.json"), "--checks", "not_a_server_error",
             "--max-examples", "25", "--generation-deterministic"],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "No issues found" in proc.stdout
        assert d.proc.poll() is None  # the daemon is still up
