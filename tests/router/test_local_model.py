"""The embedded model through ``harkd ask``, with no harkd.yaml (the built-in default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.model
def test_ask_answers_paris_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKD_")}
    env["HARKD_STATE"] = str(tmp_path / "state")
    proc = subprocess.run(
        [sys.executable, "-m", "harkd", "ask", "What is the capital of France?"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "paris" in proc.stdout.lower()
