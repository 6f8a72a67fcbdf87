"""The installed step and trigger kinds' entry points, found without importing them.

:func:`scan_entry_points` reads the ``harkd.steps`` and ``harkd.triggers`` groups from the
distributions' folders on ``sys.path`` (:mod:`importlib.metadata` only for a zip or an
egg); :func:`read_scan` and :func:`write_scan` keep the scan in the state folder while
no folder of ``sys.path`` changes; :func:`sources` tells when a package's source files
changed. :class:`harkd.core.registry.Registry` turns the entries into kinds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__

STEP_GROUP = "harkd.steps"
TRIGGER_GROUP = "harkd.triggers"


class Entry:
    """One installed entry point of a kind, with its distribution's name and version:
    found by :func:`importlib.metadata.entry_points` or read back from the scan cache."""

    __slots__ = ("dist", "group", "name", "value", "version")

    def __init__(self, group: str, name: str, value: str, dist: str, version: str) -> None:
        self.group, self.name, self.value = group, name, value
        self.dist, self.version = dist, version

    def load(self) -> Any:
        """Import the module and get the attribute, as ``EntryPoint.load`` does."""
        module, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj

    def row(self) -> list[str]:
        return [self.group, self.name, self.value, self.dist, self.version]


def scan_entry_points() -> list[Entry]:
    """Every installed kind's entry point, by group and name (one scan of the installed
    distributions): read straight from each distribution's ``entry_points.txt``, as
    :func:`importlib.metadata.entry_points` finds them, which costs a first start about
    20 ms (importing it, then a Distribution per installed package). A ``sys.path`` entry
    that is a file (a zip or an egg) takes importlib.metadata itself."""
    rows = _scan_folders()
    if rows is None:
        rows = _scan_metadata()
    out = []
    for group in (STEP_GROUP, TRIGGER_GROUP):
        # sorted by name, a stable sort: of two kinds with one name the later one wins
        out += sorted((e for e in rows if e.group == group), key=lambda e: e.name)
    return out


_GROUPS = {f"[{STEP_GROUP}]", f"[{TRIGGER_GROUP}]"}
#: what a distribution's name normalizes (PEP 503, with _ as importlib.metadata has it)
_NORMAL = re.compile(r"[-_.]+")


def _scan_folders() -> list[Entry] | None:
    """The kinds' entry points of the distributions (``*.dist-info`` and ``*.egg-info``
    folders) in the folders of ``sys.path``, the first of a name winning; None if a
    ``sys.path`` entry is a file."""
    seen: set[str] = set()
    out: list[Entry] = []
    for folder in sys.path:
        try:
            with os.scandir(folder or ".") as it:
                names = [e.name for e in it]
        except NotADirectoryError:
            return None
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            key = _NORMAL.sub("_", name.rpartition(".")[0].partition("-")[0]).lower()
            if key in seen:
                continue
            seen.add(key)
            path = os.path.join(folder or ".", name)
            try:
                with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:  # none, or an .egg-info that is a file
                continue
            if "[harkd." in text:
                out += _entries(text, path)
    return out


def _entries(text: str, path: str) -> list[Entry]:
    """The kinds in one ``entry_points.txt`` (the INI format of the packaging
    specification), with the name and version of the distribution at ``path``."""
    rows: list[tuple[str, str, str]] = []
    group = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            group = line[1:-1].strip() if line in _GROUPS else None
        elif group is not None:
            name, sep, value = line.partition("=")
            if sep:
                rows.append((group, name.strip(), value.strip()))
    if not rows:
        return []
    text = ""
    for meta in ("METADATA", "PKG-INFO"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(os.path.join(path, meta), encoding="utf-8") as f:
                text = f.read()
            break
    dist, version = _name_version(text)
    return [Entry(group, name, value, dist, version) for group, name, value in rows]


def _scan_metadata() -> list[Entry]:
    """The kinds' entry points by :func:`importlib.metadata.entry_points`."""
    import importlib.metadata

    found = importlib.metadata.entry_points()
    dists: dict[int, tuple[str, str]] = {}
    out = []
    for ep in (*found.select(group=STEP_GROUP), *found.select(group=TRIGGER_GROUP)):
        dist = ep.dist
        if dist is None:
            origin = ("?", "?")
        elif id(dist) not in dists:
            text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
            origin = dists[id(dist)] = _name_version(text)
        else:
            origin = dists[id(dist)]
        out.append(Entry(ep.group, ep.name, ep.value, *origin))
    return out


_HEADER = re.compile(r"^(Name|Version):[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def _name_version(metadata: str) -> tuple[str, str]:
    """A distribution's name and version from its metadata's header (the email parser
    that ``dist.metadata`` uses costs more than the whole scan)."""
    head = dict(_HEADER.findall(metadata.partition("\n\n")[0]))
    return head.get("Name", "?"), head.get("Version", "?")


#: a folder changed this recently may change again within its time's resolution
SETTLED_NS = 2_000_000_000


def path_key() -> list[list[Any]]:
    """``sys.path`` with each folder's time: installing or removing a distribution adds
    or removes a folder in one of them, and so changes its time."""
    key: list[list[Any]] = []
    for entry in sys.path:
        try:
            key.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            key.append([entry, None])
    return key


def read_scan(path: Path, key: list[list[Any]]) -> list[Entry] | None:
    """The scan kept at ``path``; None unless this harkd wrote it for this ``key``
    (:func:`path_key`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["harkd"] != __version__ or data["path"] != key:
            return None
        return [Entry(*row) for row in data["entry_points"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_scan(path: Path, key: list[list[Any]], found: list[Entry]) -> None:
    """Keep a scan for the next start, unless a folder changed too recently for its time
    to tell the next change (the cache would then hide it)."""
    now = time.time_ns()
    if any(t is not None and now - t < SETTLED_NS for _, t in key):
        return
    text = json.dumps({"harkd": __version__, "path": key,
                       "entry_points": [e.row() for e in found]})
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def sources(top: str) -> str:
    """The digest of the size and time of every ``.py`` file of the top-level module or
    package ``top``, found without importing it ("?" if it cannot be found)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "?"
    roots = list(spec.submodule_search_locations or ()) or [spec.origin or ""]
    h = hashlib.sha256()
    pending = sorted(roots)
    while pending:
        path = pending.pop()
        try:
            if not os.path.isdir(path):
                st = os.stat(path)
                h.update(f"{path} {st.st_mtime_ns} {st.st_size}\n".encode())
                continue
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            h.update(f"{path} ?\n".encode())
            continue
        for e in entries:
            if e.name.endswith(".py") and e.is_file():
                st = e.stat()
                h.update(f"{e.path} {st.st_mtime_ns} {st.st_size}\n".encode())
            elif e.is_dir() and e.name != "__pycache__" and not e.name.startswith("."):
                pending.append(e.path)
    return h.hexdigest()[:16]
