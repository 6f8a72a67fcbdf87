"""The per-pipeline concurrency gate: parallel, queue, single and restart modes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..errors import Busy
from .pipeline import Concurrency

RESTARTED = "restarted by a newer run"


class Gate:
    """Admits runs of one pipeline according to its :class:`Concurrency`.

    One gate serves every version of a pipeline while its ``concurrency`` stays the same,
    so a reload does not let more runs in than the file allows.
    """

    def __init__(self, spec: Concurrency) -> None:
        self.spec = spec
        self.active: set[asyncio.Task[Any]] = set()
        self.waiting = 0
        self._free = asyncio.Semaphore(spec.max)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the current task; raise :class:`Busy` when the mode says no."""
        task = await self.enter()
        try:
            yield
        finally:
            self.leave(task)

    async def enter(self, task: asyncio.Task[Any] | None = None) -> asyncio.Task[Any]:
        """Take a slot for ``task`` (default: the current task; :meth:`slot` without the
        context manager, for the run path); raise :class:`Busy` when the mode says no. Give
        it back with :meth:`leave`."""
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        mode = self.spec.mode
        if mode != "restart" and not self._free.locked():
            # A slot is free (the common case): acquire() takes it without waiting.
            await self._free.acquire()
            self.active.add(task)
            return task
        if mode == "restart":
            # The cancelled run frees its slot as it unwinds; acquire() below waits for it.
            for older in list(self.active):
                older.cancel(RESTARTED)
        elif self._free.locked():
            if mode != "queue":
                raise Busy(f"pipeline is busy ({len(self.active)} of {self.spec.max} runs "
                           f"in {mode} mode)", status=429, retry_after=1)
            if self.waiting >= self.spec.queue:
                raise Busy(f"pipeline queue is full ({self.waiting} waiting)",
                           status=503, retry_after=2)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.active.add(task)
        return task

    def leave(self, task: asyncio.Task[Any]) -> None:
        self.active.discard(task)
        self._free.release()

    @property
    def depth(self) -> int:
        return self.waiting
