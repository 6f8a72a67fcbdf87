"""The concurrency gate: a free slot is taken at once, waiting runs get slots in the
order they came, a waiter that is cancelled (even as a slot is handed to it) passes the
slot on, and the modes refuse or cancel as they say."""

from __future__ import annotations

import asyncio

import pytest

from harkd.core.concurrency import Gate
from harkd.core.pipeline import Concurrency
from harkd.errors import Busy

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _hold(gate: Gate, order: list[int], i: int, release: asyncio.Event) -> None:
    async with gate.slot():
        order.append(i)
        await release.wait()


async def test_queue_mode_admits_in_order_and_skips_a_cancelled_waiter() -> None:
    gate = Gate(Concurrency(mode="queue", max=2, queue=3))
    order: list[int] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, order, i, release)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert order == [0, 1] and gate.waiting == 3
    with pytest.raises(Busy) as refused:
        await gate.enter()
    assert refused.value.status == 503
    tasks[2].cancel()
    await asyncio.sleep(0.01)
    assert gate.waiting == 2
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4]
    assert gate.admit(asyncio.current_task())  # type: ignore[arg-type]
    assert gate.admit(asyncio.current_task())  # type: ignore[arg-type]
    assert not gate.admit(asyncio.current_task())  # type: ignore[arg-type]


async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    gate = Gate(Concurrency(mode="queue", max=1, queue=5))
    order: list[int] = []
    release = asyncio.Event()
    release.set()
    held = await gate.enter()
    second = asyncio.create_task(_hold(gate, order, 2, release))
    third = asyncio.create_task(_hold(gate, order, 3, release))
    await asyncio.sleep(0.01)
    assert gate.waiting == 2
    gate.leave(held)  # the slot goes to the second, cancelled before it resumes
    second.cancel()
    await asyncio.gather(second, third, return_exceptions=True)
    assert second.cancelled() and order == [3]
    assert not gate.active and gate.waiting == 0
    assert gate.admit(held)


async def test_parallel_mode_refuses_and_restart_mode_cancels() -> None:
    release = asyncio.Event()
    busy = Gate(Concurrency(mode="parallel", max=1))
    held = asyncio.create_task(_hold(busy, [], 0, release))
    await asyncio.sleep(0)
    with pytest.raises(Busy) as refused:
        await busy.enter()
    assert refused.value.status == 429
    release.set()
    await held

    release.clear()
    restart = Gate(Concurrency(mode="restart", max=1))
    older = asyncio.create_task(_hold(restart, [], 0, release))
    await asyncio.sleep(0)
    newer = asyncio.create_task(_hold(restart, [], 1, release))
    await asyncio.sleep(0.01)
    assert older.cancelled() and not newer.done() and len(restart.active) == 1
    release.set()
    await newer
    assert not restart.active
