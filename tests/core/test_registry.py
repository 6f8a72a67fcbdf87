"""The registry knows every installed kind by its entry point and imports a kind's module
only when a pipeline (or the schema, ``harkd check``, ``harkd plugins``) needs it; a plugin
that fails to import is still reported, at the latest by the pipeline that uses it."""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harkd.check import check
from harkd.core import entrypoints
from harkd.core.doccache import DocCache
from harkd.core.loader import load_bytes
from harkd.core.registry import Registry
from harkd.testing import capture_logs

PLUGIN = "harkd_flaky_plugin"
DEP = "harkd_flaky_dep"
# The plugin's kind is the template step under another name; its module imports a module
# of another distribution, which can go away without the plugin's own files changing.
SOURCE = (f"import dataclasses\nimport {DEP}\nfrom harkd.steps.basic import TEMPLATE\n"
          "FLAKY = dataclasses.replace(TEMPLATE, name='flaky')\n")
PIPE = b"trigger: {http: {}}\nsteps:\n  - flaky: 'hi {{ input }}'\n"
PLAIN = b"trigger: {http: {}}\nsteps:\n  - template: hi\n"


@pytest.fixture
def dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A plugin distribution on sys.path (its module not imported), and the module of
    another distribution that it imports; returns that module's file."""
    site, deps = tmp_path / "site", tmp_path / "deps"
    info = site / f"{PLUGIN}-1.0.dist-info"
    info.mkdir(parents=True)
    deps.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harkd-flaky-plugin\n"
                                   "Version: 1.0\n\nA test plugin.\n")
    (info / "entry_points.txt").write_text(f"[harkd.steps]\nflaky = {PLUGIN}:FLAKY\n")
    (site / f"{PLUGIN}.py").write_text(SOURCE)
    (deps / f"{DEP}.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(deps))
    yield deps / f"{DEP}.py"
    for name in (PLUGIN, DEP):
        sys.modules.pop(name, None)


def forget_modules() -> None:
    for name in (PLUGIN, DEP):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def test_a_kind_is_imported_when_first_looked_up(dep: Path, tmp_path: Path) -> None:
    reg = Registry.from_entry_points()
    assert PLUGIN not in sys.modules
    cache = DocCache.open(tmp_path / "cache", reg)
    assert load_bytes("p.yaml", PLAIN, registry=reg, cache=cache).pipeline is not None
    # validated against the schema of the kinds it names, it did not import the plugin
    assert PLUGIN not in sys.modules
    cache.save()

    forget_modules()
    reg = Registry.from_entry_points()
    again = DocCache.open(tmp_path / "cache", reg)
    assert load_bytes("p.yaml", PLAIN, registry=reg, cache=again).pipeline is not None
    assert again.hits == 1
    assert PLUGIN not in sys.modules  # a cached pipeline that does not use it
    assert reg.steps["flaky"].name == "flaky"
    assert PLUGIN in sys.modules
    origins = {k["name"]: k["origin"] for k in reg.describe()}
    assert origins["flaky"] == "harkd-flaky-plugin 1.0"
    assert origins["template"].startswith("harkd ")


def test_a_plugin_broken_since_the_cache_was_written_fails_its_pipeline(
        dep: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache"
    reg = Registry.from_entry_points()
    cache = DocCache.open(path, reg)
    ok = load_bytes("f.yaml", PIPE, registry=reg, cache=cache)
    assert ok.pipeline is not None and ok.pipeline.steps[0].kind == "flaky"
    cache.save()

    dep.unlink()  # the plugin's dependency is uninstalled; its own files are unchanged
    forget_modules()
    reg = Registry.from_entry_points()
    again = DocCache.open(path, reg)
    assert again.stamp == cache.stamp  # nothing told the cache: the document is found
    with capture_logs() as logs:
        failed = load_bytes("f.yaml", PIPE, registry=reg, cache=again)
    assert failed.pipeline is None
    (err,) = failed.errors
    assert "unknown step 'flaky'" in err.message
    assert (err.file, err.line, err.column) == ("f.yaml", 3, 5)
    (event,) = [e for e in logs if e["event"] == "plugin_failed"]
    assert event["name"] == "flaky" and DEP in event["error"]
    assert [p.name for p in reg.problems] == ["flaky"]
    assert again.dirty  # the document that no longer loads is dropped from the cache


def test_check_reports_a_broken_plugin_with_no_file_to_check(dep: Path,
                                                            tmp_path: Path) -> None:
    dep.unlink()
    forget_modules()
    (tmp_path / "empty").mkdir()  # no file to validate, which would import every kind
    with capture_logs() as logs:
        report = check([tmp_path / "empty"], registry=Registry.from_entry_points())
    assert report.ok and report.files == 0
    assert [e["name"] for e in logs if e["event"] == "plugin_failed"] == ["flaky"]


def test_an_edited_plugin_source_discards_the_cache(dep: Path, tmp_path: Path) -> None:
    stamp = DocCache.open(tmp_path / "cache", Registry.from_entry_points()).stamp
    plugin = dep.parent.parent / "site" / f"{PLUGIN}.py"
    plugin.write_text(SOURCE + "# edited\n")
    assert DocCache.open(tmp_path / "cache", Registry.from_entry_points()).stamp != stamp
    assert PLUGIN not in sys.modules  # told without importing it


def test_a_cached_scan_is_used_until_a_package_is_installed(
        dep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = dep.parent.parent / "site"
    cache = tmp_path / "entry-points"

    def no_scan() -> list[Any]:
        raise AssertionError("scanned again")

    with monkeypatch.context() as m:
        # The folders were made just now: a scan is cached only when no folder of sys.path
        # changed within the last seconds (the next change could keep its time).
        m.setattr(entrypoints, "SETTLED_NS", 0)
        first = Registry.from_entry_points()
        first.scan(cache)
        assert cache.exists()
        m.setattr(entrypoints, "scan_entry_points", no_scan)
        again = Registry.from_entry_points()
        again.scan(cache)
        assert [e.row() for e in again._found] == [e.row() for e in first._found]
        assert again.steps["flaky"].name == "flaky"
        assert again.fingerprint() == first.fingerprint()

    # Installing a distribution adds a folder beside the others: the scan sees it.
    info = site / "harkd_more-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harkd-more\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(f"[harkd.steps]\nmore = {PLUGIN}:FLAKY\n")
    importlib.invalidate_caches()
    third = Registry.from_entry_points()
    third.scan(cache)
    assert ("more", "harkd-more", "2.0") in [(e.name, e.dist, e.version) for e in third._found]
    assert "harkd-more" not in cache.read_text()  # changed just now: not cached


def test_the_folder_scan_finds_what_importlib_metadata_finds(
        dep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second copy of the plugin's distribution later on sys.path, its name spelled
    # another way: the first one found wins, as with importlib.metadata.
    later = tmp_path / "later"
    info = later / "Harkd.Flaky_plugin-0.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: Harkd.Flaky_plugin\n"
                                   "Version: 0.9\n")
    (info / "entry_points.txt").write_text(
        f"# a comment\n[console_scripts]\nx = y:z\n\n[harkd.steps]\n  flaky = {PLUGIN}:FLAKY\n"
        f"other = {PLUGIN}:OTHER\n[harkd.triggers]\nt = {PLUGIN}:T\n")
    monkeypatch.syspath_prepend(str(tmp_path / "missing"))
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    rows = entrypoints._scan_folders()
    assert rows is not None
    assert sorted(e.row() for e in rows) == sorted(e.row() for e in entrypoints._scan_metadata())
    assert [e.version for e in rows if e.name == "flaky"] == ["1.0"]
    assert "other" not in [e.name for e in rows]
    # Ahead of it, the same distribution made the first: its other kinds are found.
    monkeypatch.setattr(sys, "path", [str(later), *sys.path])
    rows = entrypoints._scan_folders()
    assert rows is not None
    assert {(e.group, e.name, e.version) for e in rows if e.dist == "Harkd.Flaky_plugin"} == {
        ("harkd.steps", "flaky", "0.9"), ("harkd.steps", "other", "0.9"),
        ("harkd.triggers", "t", "0.9")}
    assert sorted(e.row() for e in rows) == sorted(e.row() for e in entrypoints._scan_metadata())
    # A zip file on sys.path is left to importlib.metadata.
    zipped = tmp_path / "plugins.zip"
    zipfile.ZipFile(zipped, "w").close()
    monkeypatch.setattr(sys, "path", [*sys.path, str(zipped)])
    assert entrypoints._scan_folders() is None
    assert [e.name for e in entrypoints.scan_entry_points() if e.name == "flaky"] == ["flaky"]
