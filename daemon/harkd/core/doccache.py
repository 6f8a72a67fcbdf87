"""Validated pipeline documents kept in the state folder between starts.

A daemon that restarts on files it has already validated takes each document (its data
and the positions of its values) from here by the file's content digest, so it neither
parses YAML nor validates against the schema, and imports neither PyYAML nor jsonschema.

The cache is one text file, ``cache/pipelines`` in the state folder: a first line that
names the cache format, harkd's version and what identifies the kinds' schemas (plugins
included) without importing them: the entry points, their distributions' versions and
their source files' sizes and times (see :meth:`Registry.fingerprint`), then one line per
document, ``DIGEST<TAB>JSON``. A first line that does not match (another harkd, a plugin
added or changed, an edited source) discards the whole file. A cached document naming a
kind whose plugin no longer imports is parsed and validated again, for validation's error.

A document is kept as the loader hands it over and written as JSON by :meth:`DocCache.save`,
which a start runs once it has reported ready: the cache only speeds up the next start.
Only documents that passed validation are stored, so a broken file is parsed and
validated every time and its errors keep their FILE:LINE:COL. ``${env:}`` substitution
and compiling are not cached: they depend on the environment and the settings, and they
run on every load, with the cached positions for their errors. A document JSON cannot
carry exactly (a YAML date, a non-string key) is not stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..logs import get_logger
from ..yamlfile import Positions
from .registry import Registry

log = get_logger("harkd.doccache")

FORMAT = 1
#: documents kept at most (the newest): a pipeline folder holds far fewer
MAX_ENTRIES = 20_000


def stamp(registry: Registry) -> str:
    """The first line of a cache this harkd, with these kinds, may read. A registry made
    from entry points is told by :meth:`Registry.fingerprint`, which imports no kind (a
    restart imports only the kinds its pipelines use); one made by hand, by the digest of
    the pipeline schema."""
    key = registry.fingerprint()
    if key is None:
        from .schema import pipeline_schema

        text = json.dumps(pipeline_schema(registry), sort_keys=True, default=str)
        key = "schema-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"harkd-doccache {FORMAT} {__version__} {key}"


class DocCache:
    """Validated documents by content digest; see the module's text."""

    def __init__(self, path: Path | None, stamp: str,
                 entries: dict[str, str] | None = None) -> None:
        self.path = path
        self.stamp = stamp
        #: read from the file and not yet used by this process
        self._old: dict[str, str] = entries or {}
        #: used or added by this process: what :meth:`save` keeps
        self._live: dict[str, str] = {}
        #: added by this process and not yet made JSON (:meth:`put`)
        self._new: dict[str, tuple[Any, Positions]] = {}
        self._dirty = False
        self.hits = self.misses = 0

    @classmethod
    def open(cls, path: Path, registry: Registry) -> DocCache:
        """The cache at ``path``; empty if it is missing, unreadable or another stamp's."""
        first = stamp(registry)
        entries: dict[str, str] = {}
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, ValueError):
            text = ""
        lines = text.split("\n")
        if lines[0] == first:
            for line in lines[1:]:
                digest, tab, doc = line.partition("\t")
                if tab:
                    entries[digest] = doc
        return cls(path, first, entries)

    @property
    def dirty(self) -> bool:
        """Whether the file differs from what :meth:`save` would write."""
        return self._dirty or bool(self._old)

    def get(self, digest: str, file: str) -> tuple[Any, Positions] | None:
        """The validated document of content ``digest`` (a fresh copy), with positions in
        ``file``; None if it is not here."""
        if digest in self._new:
            self._encode(digest)
        doc = self._live.get(digest)
        if doc is None:
            doc = self._old.pop(digest, None)
            if doc is None:
                self.misses += 1
                return None
            self._live[digest] = doc
        try:
            data, values, keys = json.loads(doc)
            positions = Positions(file, {p: (v[0], v[1]) for p, v in values.items()},
                                  {p: (v[0], v[1]) for p, v in keys.items()})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            del self._live[digest]  # a damaged line: validate again, and drop it
            self._dirty = True
            self.misses += 1
            return None
        self.hits += 1
        return data, positions

    def discard(self, digest: str) -> None:
        """Forget a document (it names a kind that is no longer there)."""
        self._old.pop(digest, None)
        self._new.pop(digest, None)
        if self._live.pop(digest, None) is not None:
            self._dirty = True

    def put(self, digest: str, data: Any, positions: Positions) -> None:
        """Keep a document that passed validation (before ``${env:}`` substitution). It is
        kept as it is, made JSON when saved: nothing changes a loaded document
        (substitution copies it, compiling reads it)."""
        self._new[digest] = (data, positions)
        self._dirty = True

    def _encode(self, digest: str) -> None:
        """Make an added document JSON, unless JSON would not carry it exactly (tuples,
        dates, non-string keys): then it is not kept."""
        data, positions = self._new.pop(digest)
        try:
            text = json.dumps(data, allow_nan=False)
            if json.loads(text) != data:
                return
        except (TypeError, ValueError, RecursionError):
            return
        self._live[digest] = (f"[{text},{json.dumps(positions.values)},"
                              f"{json.dumps(positions.keys)}]")

    def save(self) -> None:
        """Write the documents used or added since :meth:`open` (atomically), if that
        changes the file. A failure to write is logged once and otherwise ignored."""
        for digest in list(self._new):
            self._encode(digest)
        if not self.dirty or self.path is None:
            return
        items = list(self._live.items())[-MAX_ENTRIES:]
        text = "\n".join([self.stamp, *(f"{d}\t{doc}" for d, doc in items)]) + "\n"
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.write_text(text, encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("doccache_not_saved", file=str(self.path), error=exc.strerror)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.path = None  # do not try again on every reload
            return
        self._old.clear()
        self._dirty = False
