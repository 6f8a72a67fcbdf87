"""Upgrades: `harkd --version`, and old pipeline keys named by their new names."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import harkd
from harkd.core.loader import load_bytes
from harkd.core.validate import RENAMED


def _harkd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harkd", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_version() -> None:
    proc = _harkd("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"harkd {harkd.__version__}"
    assert harkd.__version__ == metadata.version("harkd")


OLD = """trigger:
  webhook: {}
steps:
  - template: hi
    output: greeting
  - render: "{{ vars.greeting }}!"
concurrency: {limit: 2}
"""


def test_renamed_keys_name_the_new_key() -> None:
    loaded = load_bytes("old.yaml", OLD.encode())
    got = {(e.line, e.column): e.message for e in loaded.errors}
    assert got == {
        (2, 3): "'webhook' was renamed to 'http' in trigger; write 'http' instead",
        (5, 5): "'output' was renamed to 'as' in step 1; write 'as' instead",
        (6, 5): "'render' was renamed to 'template' in step 2; write 'template' instead",
        (7, 15): "'limit' was renamed to 'max' in concurrency; write 'max' instead",
    }


def test_renamed_config_key_through_harkd_check(tmp_path: Path) -> None:
    (tmp_path / "harkd.yaml").write_text("server:\n  bind: 127.0.0.1:9000\n")
    proc = _harkd("check", "harkd.yaml", cwd=tmp_path)
    assert proc.returncode == 78
    assert proc.stdout.splitlines() == [
        "harkd.yaml:2:3: 'bind' was renamed to 'listen' in server; write 'listen' instead "
        "(at /server/bind)"]


def test_an_unrelated_unknown_key_gets_no_rename_hint() -> None:
    loaded = load_bytes("p.yaml", b"trigger: {http: {}}\nsteps: [{template: hi}]\nonn: 1\n")
    assert len(loaded.errors) == 1
    assert "renamed" not in loaded.errors[0].message


def test_every_new_name_in_the_table_is_a_key_harkd_knows() -> None:
    from harkd.config import config_schema
    from harkd.core import registry, schema

    pipeline = schema.pipeline_schema(registry.default())
    config = config_schema()
    known = set(pipeline["properties"]) | set(config["properties"]) | set(
        pipeline["$defs"]["step"]["properties"]) | set(
        config["properties"]["server"]["properties"]) | set(
        pipeline["properties"]["concurrency"]["properties"])
    triggers = {"http", "websocket", "cron", "mic"}  # some come from other packages
    for table in RENAMED.values():
        for new in table.values():
            assert new in known | triggers, new
