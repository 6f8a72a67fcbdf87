"""The mic trigger's device release: the close runs to its end even when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from harkd.voice import mic
from harkd.voice.capture import Capture

pytestmark = pytest.mark.anyio


async def test_cancel_as_the_close_ends_still_cancels() -> None:
    # The release is awaited on the way out of a capture (device lost, or cancelled at
    # unbind). A cancellation that comes in the loop pass where the close ends must still
    # end the task: asyncio.wait_for on Python 3.11 returned instead, and the trigger went
    # on to retry the device after it was told to stop. The close runs in a thread, so the
    # cancel is moved over every loop pass from the end of that thread until the release
    # is over; whenever it lands before, the task must end cancelled.
    landed = 0
    for passes in range(12):
        task = asyncio.create_task(mic._release(Capture(None)))
        await asyncio.sleep(0)  # the release starts its closing thread
        for thread in list(mic._CLOSING):
            thread.join()  # blocking the loop: the result is queued for its next pass
        for _ in range(passes):
            await asyncio.sleep(0)
        if task.cancel():
            landed += 1
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            await task
    # the passes covered both sides: cancels that landed and a release already over
    assert 0 < landed < 12
