"""The per-pipeline concurrency gate: parallel, queue, single and restart modes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..errors import Busy
from .pipeline import Concurrency

RESTARTED = "restarted by a newer run"


class Gate:
    """Admits runs of one pipeline according to its :class:`Concurrency`.

    One gate serves every version of a pipeline while its ``concurrency`` stays the same,
    so a reload does not let more runs in than the file allows. Runs that wait get their
    slot in the order they came (a slot given back goes straight to the first of them).
    """

    def __init__(self, spec: Concurrency) -> None:
        self.spec = spec
        self.active: set[asyncio.Task[Any]] = set()
        self.waiting = 0
        #: slots nobody holds or has been handed
        self._free = spec.max
        self._waiters: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the current task; raise :class:`Busy` when the mode says no."""
        task = await self.enter()
        try:
            yield
        finally:
            self.leave(task)

    def admit(self, task: asyncio.Task[Any]) -> bool:
        """Take a free slot for ``task`` if that needs no waiting and cancels nothing (the
        common case, without a coroutine: every run's path); False when :meth:`enter` must
        decide. Give the slot back with :meth:`leave`."""
        if self._free and not self._waiters and self.spec.mode != "restart":
            self._free -= 1
            self.active.add(task)
            return True
        return False

    async def enter(self, task: asyncio.Task[Any] | None = None) -> asyncio.Task[Any]:
        """Take a slot for ``task`` (default: the current task; :meth:`slot` without the
        context manager); raise :class:`Busy` when the mode says no. Give it back with
        :meth:`leave`."""
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        if self.admit(task):
            return task
        mode = self.spec.mode
        if mode == "restart":
            # The cancelled run frees its slot as it unwinds; _acquire() waits for it.
            for older in list(self.active):
                older.cancel(RESTARTED)
        elif not self._free or self._waiters:
            if mode != "queue":
                raise Busy(f"pipeline is busy ({len(self.active)} of {self.spec.max} runs "
                           f"in {mode} mode)", status=429, retry_after=1)
            if self.waiting >= self.spec.queue:
                raise Busy(f"pipeline queue is full ({self.waiting} waiting)",
                           status=503, retry_after=2)
        self.waiting += 1
        try:
            await self._acquire()
        finally:
            self.waiting -= 1
        self.active.add(task)
        return task

    async def _acquire(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def leave(self, task: asyncio.Task[Any]) -> None:
        self.active.discard(task)
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it without becoming free
                return
        self._free += 1

    @property
    def depth(self) -> int:
        return self.waiting
