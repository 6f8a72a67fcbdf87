"""The package's imports have no circles and never reach up a layer (scripts/import-graph)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "import-graph"


def graph(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)],
                          capture_output=True, text=True, check=False)


def test_the_package_has_no_circles_and_imports_only_downwards() -> None:
    r = graph(REPO / "daemon")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 circle(s)" in r.stdout


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    shutil.copytree(REPO / "daemon" / "harkd", tmp_path / "harkd",
                    ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    pipeline = tmp_path / "harkd" / "core" / "pipeline.py"
    pipeline.write_text(pipeline.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nfrom ..daemon import Daemon  # noqa\n", 1))
    r = graph(tmp_path)
    assert r.returncode == 1
    assert "imports up a layer: harkd.core.pipeline -> harkd.daemon" in r.stdout
    assert "circle of" in r.stdout
