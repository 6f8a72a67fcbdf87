"""The benchmark harness runs and produces figures. Timings are never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_smoke_produces_figures(tmp_path: Path) -> None:
    out = tmp_path / "core.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "core.py"), "--smoke", "--only", "reload",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.with_suffix(".json").read_text())
    names = [f["name"] for f in data["figures"]]
    assert any(n.startswith("p95, 1 of 1 ") for n in names), names
    assert all(f["value"]["n"] > 0 for f in data["figures"])
    assert "| figure |" in out.read_text()
