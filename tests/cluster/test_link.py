"""The Redis link's own lifecycle: closing it ends its background tasks and takes no more
work, and an outage is one outage until its comeback is done."""

from __future__ import annotations

import asyncio

import pytest
from cluster_helpers import RedisServer

from harkd.cluster.config import ClusterConfig
from harkd.cluster.link import Cluster, Unavailable
from harkd.testing import capture_logs, free_port, wait_until

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


async def test_redis_lost_again_while_it_comes_back_is_the_same_outage(
        own_redis: RedisServer) -> None:
    # The probe gets an answer, the comeback's reconcilers start, and Redis goes away
    # before they are done: "back" was never logged, so this is still the outage logged
    # when it began, not a second one (which read down, down, back).
    link = Cluster(ClusterConfig(redis=own_redis.url, replica="a", timeout=0.5, probe=0.05))
    healths: list[str] = []

    async def lose_redis_in_the_first_comeback() -> None:
        healths.append(link.health)
        if len(healths) == 2:  # 1: the first connect, 2: the first comeback
            own_redis.kill()
            await link.run(lambda r: r.ping())

    link.reconciler("flaky", lose_redis_in_the_first_comeback)
    with capture_logs() as logs:
        await link.start()
        try:
            assert link.up
            own_redis.kill()
            with pytest.raises(Unavailable):
                await link.run(lambda r: r.ping())
            own_redis.start()
            await wait_until(lambda: len(healths) == 2 and not link.up)
            own_redis.start()
            await wait_until(lambda: link.up)
        finally:
            await link.aclose()
    assert healths == ["up", "up", "up"]  # the reconcilers run with Redis usable
    events = [e["event"] for e in logs if e["event"].startswith("cluster_redis")]
    assert events == ["cluster_redis_down", "cluster_redis_back"]
    assert link.outages == 1


async def test_a_closed_link_fails_over_at_once_and_logs_no_outage(
        own_redis: RedisServer) -> None:
    # A limit's idle timer gives its slots back (a deferred write) after the daemon has
    # closed the link: that write went on the client being closed under it, and the error
    # was logged as a Redis outage at each such shutdown.
    link = Cluster(ClusterConfig(redis=own_redis.url, replica="a", timeout=0.5, probe=0.05))
    with capture_logs() as logs:
        await link.start()
        assert link.up
        await link.aclose()
        link.defer(lambda p: p.set("late", "1"))
        with pytest.raises(Unavailable):
            await link.run(lambda r: r.ping())
    assert link.health == "closed" and link.outages == 0
    assert not [e for e in logs if e["event"] == "cluster_redis_down"]
