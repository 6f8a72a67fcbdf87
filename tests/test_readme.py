"""The README's "Use it from Python" examples run as written, against the embedded model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


@pytest.mark.model
def test_use_it_from_python_runs(tmp_path: Path) -> None:
    (block, *_) = python_blocks("Use it from Python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKD_")}
    env["HARKD_STATE"] = str(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paris" in proc.stdout.lower().splitlines()[0]
    assert (tmp_path / "chat.json").exists()
    dumped = proc.stdout[proc.stdout.index("# yaml-language-server"):]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "dumped.yaml").write_text(dumped)
    check = subprocess.run([sys.executable, "-m", "harkd", "check", str(tmp_path / "p")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout


def test_python_examples_are_present() -> None:
    assert python_blocks("Use it from Python")
