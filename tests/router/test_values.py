"""The router's values and timers: the one-step ``__init__`` of its frozen dataclasses
(:func:`harkd.router.types.quick_init`) builds what the dataclass's own would, and the
deadlines that share one timer per slot (:class:`harkd.router.calls.Deadline`) each fire
for their own task only, never early, and not once cancelled."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

import pytest

from harkd.router.calls import GRAIN, Deadline, _slots
from harkd.router.types import Attempt, ChatRequest, ChatResponse, Completion, Usage, quick_init

pytestmark = pytest.mark.anyio

VALUES = (ChatRequest, Usage, Attempt, ChatResponse, Completion)


def stock(cls: type[Any]) -> type[Any]:
    """The same class with the ``__init__`` dataclasses makes."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default,
                                                  default_factory=f.default_factory))
              for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True)


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__name__)
def test_quick_init_builds_what_the_dataclass_init_does(cls: type[Any]) -> None:
    ref = stock(cls)
    names = list(inspect.signature(ref).parameters)
    assert list(inspect.signature(cls).parameters) == names
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    given = {name: f"v{i}" for i, name in enumerate(required)}
    mine, theirs = cls(**given), ref(**given)
    assert dataclasses.asdict(mine) == dataclasses.asdict(theirs)
    # every field given, positionally, lands in its own place
    values = [object() for _ in names]
    assert [getattr(cls(*values), n) for n in names] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(mine, names[0], "changed")
    with pytest.raises(TypeError):
        cls(*values, "one too many")


def test_quick_init_gives_each_value_its_own_default_from_a_factory() -> None:
    a, b = ChatRequest("m", ()), ChatRequest("m", ())
    assert a.params == {} and a.params is not b.params and a.origin is not b.origin
    assert a == b and hash(Usage(1, 2)) == hash(Usage(1, 2))
    assert dataclasses.replace(a, model="n").model == "n"

    @quick_init
    @dataclasses.dataclass(frozen=True)
    class Marked:
        shown: list[int] = dataclasses.field(default_factory=lambda: [1])

    assert Marked().shown == [1] and Marked([2]).shown == [2]


async def test_deadlines_sharing_a_slot_each_fire_for_their_own_task() -> None:
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.05
    fired: dict[str, float] = {}

    async def wait(name: str, cancel_first: bool) -> str:
        deadline = Deadline(when - loop.time())
        try:
            if cancel_first:
                deadline.cancel()
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            assert deadline.expired()
            fired[name] = loop.time()
            return "timed out"
        finally:
            deadline.cancel()
        return "slept"

    results = await asyncio.gather(wait("a", False), wait("b", True), wait("c", False))
    assert results == ["timed out", "slept", "timed out"]
    # never before the deadline, and within its slot (plus the loop's own lateness)
    assert all(when <= t < when + GRAIN + 0.1 for t in fired.values())


async def test_a_deadline_passed_while_disarmed_fires_on_the_next_wait() -> None:
    deadline = Deadline(0.01, armed=False)
    await asyncio.sleep(0.05)
    assert deadline.fired and not deadline.hit
    deadline.refire()
    deadline.arm()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert deadline.expired()
    deadline.cancel()


async def test_deadlines_keep_one_timer_and_done_ones_leave_nothing_due() -> None:
    # one timer per loop, however many slots; done calls leave no slot behind, and the
    # slots' heap is rebuilt once it holds mostly emptied ones
    loop = asyncio.get_running_loop()

    def pending() -> int:
        return sum(not t.cancelled() for t in loop._scheduled)  # type: ignore[attr-defined]

    before = pending()
    kept = Deadline(600)
    for i in range(500):
        Deadline(60 + i * GRAIN).cancel()
        assert pending() <= before + 1
    Deadline(600).cancel()
    slots = _slots(loop)
    assert list(slots.due) == [kept.slot]
    assert len(slots.order) <= 2 * len(slots.due) + 65
    kept.cancel()
    assert slots.due == {}
    assert pending() <= before + 1


async def test_a_deadline_fires_after_earlier_slots_have_emptied() -> None:
    # the timer was set for the earliest slot; when it finds that slot empty it is set
    # again for the next one that still has a deadline
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(3):
        Deadline(0.01 + i * GRAIN).cancel()
    deadline = Deadline(0.08)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    assert deadline.expired()
    assert loop.time() - start >= 0.08
    deadline.cancel()
