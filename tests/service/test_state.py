"""The state folder carries a schema version and migrates forward."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from harkd import state
from harkd.settings import Settings
from harkd.testing import spawn_daemon


def test_new_folder_is_stamped_with_the_current_version(tmp_path: Path) -> None:
    root = state.prepare(tmp_path / "a" / "state")
    assert root == (tmp_path / "a" / "state").absolute()
    assert (root / state.VERSION_FILE).read_text() == f"{state.SCHEMA_VERSION}\n"
    assert root.stat().st_mode & 0o777 == 0o700
    assert state.prepare(root) == root  # again: nothing changes


def test_prepare_takes_settings_and_subdir_creates_a_folder(tmp_path: Path) -> None:
    s = Settings(state=tmp_path / "st")
    runs = state.subdir(s, "runs")
    assert runs == (tmp_path / "st" / "runs").absolute() and runs.is_dir()
    assert state.read_version(tmp_path / "st") == state.SCHEMA_VERSION


def test_migrations_run_in_order_and_stamp_each_step(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / state.VERSION_FILE).write_text("1\n")
    (root / "runs.log").write_text("old\n")
    seen: list[tuple[int, int | None]] = []

    def to2(r: Path) -> None:
        seen.append((1, state.read_version(r)))
        (r / "runs.log").rename(r / "runs.db")

    def to3(r: Path) -> None:
        seen.append((2, state.read_version(r)))
        (r / "sessions").mkdir()

    state.prepare(root, migrations={1: to2, 2: to3}, current=3)
    assert seen == [(1, 1), (2, 2)]
    assert state.read_version(root) == 3
    assert (root / "runs.db").read_text() == "old\n" and (root / "sessions").is_dir()


def test_a_failed_migration_keeps_the_last_good_version(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / state.VERSION_FILE).write_text("1\n")

    def broken(r: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(state.StateError, match="migration from version 2 failed"):
        state.prepare(root, migrations={1: lambda r: None, 2: broken}, current=3)
    assert state.read_version(root) == 2  # the next start resumes from here


def test_unversioned_folder_with_data_is_migrated_from_zero(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / "sessions.json").write_text("{}")
    state.prepare(root)
    assert state.read_version(root) == state.SCHEMA_VERSION
    assert (root / "sessions.json").read_text() == "{}"


@pytest.mark.parametrize(("text", "message"), [
    ("99\n", "newer than this harkd supports"),
    ("garbage\n", "not a schema version number"),
])
def test_unknown_versions_are_refused(tmp_path: Path, text: str, message: str) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / state.VERSION_FILE).write_text(text)
    with pytest.raises(state.StateError, match=message):
        state.prepare(root)
    assert (root / state.VERSION_FILE).read_text() == text


def test_missing_migration_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / state.VERSION_FILE).write_text("1\n")
    with pytest.raises(state.StateError, match="no migration from schema version 1"):
        state.prepare(root, migrations={}, current=2)


def test_the_daemon_prepares_its_state_folder(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy-state"
    legacy.mkdir()
    (legacy / "old-run-log").write_text("x")
    with spawn_daemon(tmp_path, {"echo": "trigger: {http: {}}\nsteps: [{template: hi}]\n"},
                      args=("--state", str(legacy))) as d:
        assert state.read_version(legacy) == state.SCHEMA_VERSION
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
    assert "state_migrated" in d.output()
