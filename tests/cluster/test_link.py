"""The Redis link's own lifecycle: closing it ends its background tasks."""

from __future__ import annotations

import asyncio

import pytest

from harkd.cluster.config import ClusterConfig
from harkd.cluster.link import Cluster
from harkd.testing import free_port

pytestmark = pytest.mark.anyio


async def test_aclose_ends_a_task_that_swallowed_its_cancellation() -> None:
    # As redis-py's send under asyncio.wait_for does on Python 3.11 when the cancellation
    # arrives in the loop pass where the send completes: the task goes on.
    link = Cluster(ClusterConfig(redis=f"redis://127.0.0.1:{free_port()}/0", replica="a",
                                 timeout=0.05))
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)

    task = link.spawn(stubborn())
    await asyncio.sleep(0)
    closing = asyncio.create_task(link.aclose())
    done, _ = await asyncio.wait({closing}, timeout=60)  # it takes well under a second
    if not done:
        closing.cancel()
        task.cancel()
    assert closing in done, "aclose waits for ever for a task that swallowed a cancel"
    assert swallowed.is_set() and task.done()
