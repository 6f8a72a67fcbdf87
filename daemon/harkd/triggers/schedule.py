"""Cron schedules: the instants a cron expression fires at in a time zone (with daylight
saving time handled as Vixie cron does), and the last fire time kept on disk across
restarts. The ``cron`` trigger (:mod:`harkd.triggers.cron`) runs on these."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from ..records import dataclass


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a time zone: the instants (Unix times) it fires at."""

    expression: str
    timezone: str = "UTC"

    @property
    def fields(self) -> list[str]:
        return self.expression.split()

    @property
    def seconds(self) -> bool:
        return len(self.fields) == 6

    @property
    def _fixed_hour(self) -> bool:
        f = self.fields
        if f[0].startswith("@"):
            return f[0] != "@hourly"
        return "*" not in f[2 if self.seconds else 1]

    def _iter(self, after: float) -> Any:
        from croniter import croniter

        start = dt.datetime.fromtimestamp(after, _zone(self.timezone))
        return croniter(self.expression, start, second_at_beginning=self.seconds)

    def next_after(self, after: float) -> float:
        """The first fire strictly after ``after``."""
        it = self._iter(after)
        while True:
            when: dt.datetime = it.get_next(dt.datetime)
            if self._fixed_hour and _repeated(when):
                continue  # the fall-back hour: this wall-clock time already fired
            t = when.timestamp()
            if t > after:
                return t

    def between(self, after: float, until: float, limit: int = 10000) -> list[float]:
        """Fires in ``(after, until]``, at most ``limit`` (the newest ones)."""
        out: collections.deque[float] = collections.deque(maxlen=limit)
        t = self.next_after(after)
        while t <= until:
            out.append(t)
            t = self.next_after(t)
        return list(out)

    def local(self, t: float) -> str:
        return dt.datetime.fromtimestamp(t, _zone(self.timezone)).isoformat()


def _zone(name: str) -> dt.tzinfo:
    """The time zone ``name``; zoneinfo (with sysconfig, 2.5 ms) is imported on first use,
    not with every cron-capable start."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _repeated(when: dt.datetime) -> bool:
    """Whether ``when`` is the second occurrence of its wall-clock time (a fall-back)."""
    return when.utcoffset() != when.replace(fold=0).utcoffset()


def read_last(path: Path) -> float | None:
    """The last fire time kept in ``path``, or None (missing or unreadable: start fresh)."""
    try:
        data = json.loads(path.read_text())
        return float(data["last"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_last(path: Path, t: float, expression: str, *, sync: bool = True) -> None:
    """Keep ``t`` as the last fire time; atomic, so a crash leaves the old or the new.

    Without ``sync`` the new file survives a killed process (the kernel has it) but not a
    power cut; :func:`sync_last` makes it durable later.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump({"last": t, "schedule": expression}, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def sync_last(path: Path) -> None:
    """fsync the state file and its folder (after a ``sync=False`` write)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
