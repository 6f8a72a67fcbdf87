"""The state folder: one place for the run log, sessions and assembled local models.

The folder carries a schema version in ``VERSION``. :func:`prepare` creates the folder,
stamps a new one with :data:`SCHEMA_VERSION`, and runs the migrations from
:data:`MIGRATIONS` in order when an older harkd wrote it, so an upgrade keeps every run
and session. A folder written by a *newer* harkd is refused rather than guessed at:
downgrading would silently corrupt what the newer version wrote.

Every component that keeps files calls :func:`prepare` (or :func:`subdir`) and writes only
below the folder it returns::

    runs = state.subdir(settings, "runs")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from .errors import HarkError
from .logs import get_logger
from .settings import Settings

log = get_logger("harkd.state")

#: the layout this harkd writes; bump it and add a migration when the layout changes
SCHEMA_VERSION = 1
VERSION_FILE = "VERSION"
LOCK_FILE = ".lock"

#: ``MIGRATIONS[n]`` upgrades a version-``n`` folder to version ``n + 1``, in place
Migration = Callable[[Path], None]


class StateError(HarkError, OSError):
    """The state folder cannot be used: it cannot be created or written, it holds a
    version this harkd does not know, or a migration failed. Raised by :func:`prepare`."""


def _from_unversioned(root: Path) -> None:
    """Version 0 is a folder that 0.0 builds wrote before ``VERSION`` existed; its files
    already sit where version 1 expects them, so stamping it is the whole migration."""


MIGRATIONS: Mapping[int, Migration] = {0: _from_unversioned}


def prepare(where: Settings | Path | str, *,
            migrations: Mapping[int, Migration] | None = None,
            current: int = SCHEMA_VERSION) -> Path:
    """Create or upgrade the state folder and return its absolute path.

    Safe to call many times and from several processes at once (``harkd run`` and
    ``harkd invoke``): the check and any migration run under an exclusive lock.
    ``migrations`` and ``current`` exist for tests; callers pass only ``where``.
    """
    table = MIGRATIONS if migrations is None else migrations
    root = Path(where.state if isinstance(where, Settings) else where).expanduser().absolute()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create state folder {root}: {exc.strerror}") from None
    with _locked(root):
        found = read_version(root)
        if found is None:
            # A brand-new folder is stamped; files without a stamp come from a 0.0 build.
            found = 0 if _has_data(root) else current
            if found == current:
                _write_version(root, current)
                log.debug("state_created", folder=str(root), version=current)
                return root
        if found > current:
            raise StateError(f"state folder {root} has schema version {found}, newer than "
                             f"this harkd supports ({current}); upgrade harkd or use "
                             "another --state folder")
        while found < current:
            step = table.get(found)
            if step is None:
                raise StateError(f"state folder {root}: no migration from schema version "
                                 f"{found} to {found + 1}")
            try:
                step(root)
            except OSError as exc:
                raise StateError(f"state folder {root}: migration from version {found} "
                                 f"failed: {exc}") from None
            # Stamp after each step, so an interrupted upgrade resumes where it stopped.
            found += 1
            _write_version(root, found)
            log.info("state_migrated", folder=str(root), version=found)
    return root


def subdir(where: Settings | Path | str, *parts: str) -> Path:
    """A folder inside the prepared state folder (``runs``, ``sessions``, ``models``)."""
    path = prepare(where).joinpath(*parts)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None
    return path


def read_version(root: Path) -> int | None:
    """The schema version stamped in ``root``, or None if it has no stamp."""
    try:
        text = (root / VERSION_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {root / VERSION_FILE}: {exc.strerror}") from None
    try:
        return int(text)
    except ValueError:
        raise StateError(f"{root / VERSION_FILE} holds {text[:40]!r}, not a schema "
                         "version number") from None


def _has_data(root: Path) -> bool:
    return any(p.name not in (VERSION_FILE, LOCK_FILE) for p in root.iterdir())


def _write_version(root: Path, version: int) -> None:
    target = root / VERSION_FILE
    tmp = root / f".{VERSION_FILE}.tmp"
    try:
        tmp.write_text(f"{version}\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise StateError(f"cannot write {target}: {exc.strerror}") from None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"state folder {root} is not writable: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
