"""A plugin package adds steps through entry points: installed for real, used from YAML."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harkd.testing import spawn_daemon

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "harkd-sample-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample plugin pip-installed into a folder of its own, plus a broken plugin."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / PLUGIN.name
    shutil.copytree(PLUGIN, source)  # the build leaves files beside the source
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    # A second, broken distribution: its entry point's module fails to import.
    info = target / "harkd_broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harkd-broken-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[harkd.steps]\nbroken = harkd_broken_plugin:X\n")
    (target / "harkd_broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    return target


def harkd(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "harkd", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


PIPE = "trigger: {http: {}}\nsteps:\n  - reverse: {}\n  - word_count: {min_length: 2}\n"


def test_plugins_lists_kinds_with_versions_and_the_broken_one(site: Path) -> None:
    r = harkd(site, "plugins", "--json")
    data = json.loads(r.stdout)
    origins = {k["name"]: k["origin"] for k in data["kinds"]}
    assert origins["reverse"] == "harkd-sample-plugin 0.1.0"
    assert origins["template"].startswith("harkd ")
    (problem,) = data["problems"]
    assert problem["name"] == "broken" and "needs libfoo" in problem["error"]
    r = harkd(site, "plugins")
    assert r.returncode == 1 and "plugin broken" in r.stderr and "needs libfoo" in r.stderr


def test_plugin_steps_are_in_the_schema_and_checked(site: Path, tmp_path: Path) -> None:
    schema = json.loads(harkd(site, "schema", "--kind", "pipeline").stdout)
    step = schema["$defs"]["step"]["properties"]["word_count"]
    assert step["properties"]["min_length"]["minimum"] == 1
    (tmp_path / "ok.yaml").write_text(PIPE)
    (tmp_path / "bad.yaml").write_text(PIPE.replace("min_length: 2", "min_lenght: 2"))
    r = harkd(site, "check", str(tmp_path))
    assert r.returncode == 78
    assert "bad.yaml:4:18: unknown key 'min_lenght' in step 2 (word_count); did you mean " \
        "'min_length'?" in r.stdout
    # Without the plugin installed, the same file names an unknown step.
    plain = subprocess.run([sys.executable, "-m", "harkd", "check", str(tmp_path / "ok.yaml")],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "unknown step 'reverse'" in plain.stdout


def test_plugin_step_runs_in_the_daemon(site: Path, tmp_path: Path) -> None:
    with spawn_daemon(tmp_path, {"rev": PIPE}, env={"PYTHONPATH": str(site)}) as s:
        req = urllib.request.Request(s.url("/hooks/rev"), data=b"ab cde f",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"words": 2}
        # No pipeline uses the broken plugin, so it was never imported.
        assert "plugin_failed" not in s.output()
        # One that does is rejected at its step, and the plugin is reported, not fatal.
        (s.folder / "uses_broken.yaml").write_text(
            "trigger: {http: {}}\nsteps:\n  - broken: {}\n")
        deadline = time.monotonic() + 30
        while "uses_broken" not in s.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "plugin_failed" in s.output() and "unknown step 'broken'" in s.output()
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"words": 2}
