"""Turn one pipeline file into a compiled :class:`~harkd.core.pipeline.Pipeline` or its errors.

Read, parse (with positions), validate, substitute ``${env:...}``, compile. Each stage
collects every error it can find, so a user sees all the problems of a file at once.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import secrets, yamlfile
from ..errors import ConfigError, ConfigErrors, Position
from ..records import dataclass
from . import registry as reg
from .pipeline import Pipeline, compile_pipeline
from .registry import Registry, UnknownKind

if TYPE_CHECKING:
    from .doccache import DocCache

SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Editors' swap, backup and temporary files (vim, emacs, JetBrains, rsync, browsers).
_TEMP = re.compile(r"^(\.|#|~)|(~|\.swp|\.swx|\.tmp|\.bak|\.part|\.crdownload|___jb_\w+___)$")


def digest(raw: bytes) -> str:
    """The content digest that tells one version of a file from another."""
    return hashlib.sha256(raw).hexdigest()[:16]


def pipeline_name(path: str | Path) -> str | None:
    """The pipeline name of a file in the watched folder, or None if it is not one."""
    name = os.path.basename(path)
    stem, suffix = os.path.splitext(name)
    if _TEMP.search(name) or suffix not in SUFFIXES:
        return None
    return stem


def _stem(file: str) -> str:
    """``Path(file).stem``, without making a Path (a start makes one per file)."""
    return os.path.splitext(os.path.basename(file))[0]


@dataclass(frozen=True, eq=False)
class Loaded:
    """The outcome of loading one file: a pipeline, or the errors that stopped it."""

    name: str
    file: str
    pipeline: Pipeline | None
    errors: tuple[ConfigError, ...] = ()
    digest: str = ""
    #: where each value of the file is, for errors found after loading (route conflicts)
    positions: yamlfile.Positions | None = field(default=None, compare=False, repr=False)

    def at(self, ptr: str) -> Position:
        if self.positions is None:
            return Position(self.file, 1, 1, ptr)
        return self.positions.at(ptr, key=True)


def load_bytes(
    file: str,
    raw: bytes,
    *,
    registry: Registry | None = None,
    environ: Mapping[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    cache: DocCache | None = None,
) -> Loaded:
    """Load one pipeline from its bytes; never raises for bad content. With ``cache``, a
    document validated before (same bytes, same harkd and schema) is neither parsed nor
    validated again; see :mod:`harkd.core.doccache`."""
    name = _stem(file)
    sha = digest(raw)
    registry = registry or reg.default()

    def failed(errors: list[ConfigError]) -> Loaded:
        return Loaded(name, file, None, tuple(errors), sha)

    if not _NAME.match(name):
        return failed([ConfigError(
            f"pipeline name {name!r} (the file stem) may hold only letters, digits, - and _",
            Position(file))])
    def compiled(data: Any, positions: yamlfile.Positions) -> Loaded:
        data, errors = secrets.substitute(data, positions, environ)
        if errors:
            return failed(errors)
        try:
            pipeline = compile_pipeline(name, file, data, positions, registry, digest=sha,
                                        settings=settings)
        except ConfigErrors as exc:
            return failed(exc.errors)
        return Loaded(name, file, pipeline, (), sha, positions)

    hit = cache.get(sha, file) if cache is not None else None
    if hit is not None:
        try:
            return compiled(*hit)
        except UnknownKind:
            # A kind whose plugin no longer imports: validation words the error.
            assert cache is not None
            cache.discard(sha)
    try:
        data, positions = yamlfile.load(file, yamlfile.read_text(file, raw))
    except ConfigError as exc:
        return failed([exc])
    from .validate import validate_pipeline  # jsonschema: only when there is work

    errors = validate_pipeline(data, positions, registry)
    if errors:
        return failed(errors)
    if cache is not None:
        cache.put(sha, data, positions)
    return compiled(data, positions)


def load_file(
    path: str | Path,
    *,
    registry: Registry | None = None,
    environ: Mapping[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    cache: DocCache | None = None,
) -> Loaded:
    file = str(path)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return Loaded(_stem(file), file, None,
                      (ConfigError(f"cannot read file: {exc.strerror}", Position(file)),))
    return load_bytes(file, raw, registry=registry, environ=environ, settings=settings,
                      cache=cache)


def discover(folder: Path) -> list[Path]:
    """Pipeline files directly in ``folder``, sorted by name (the names, not Paths: a
    start sorts every file, and comparing two Paths costs ten times as much)."""
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if pipeline_name(e.name) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in names]
