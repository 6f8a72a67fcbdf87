"""Capture's loop side: frames from the blocks PortAudio delivers, and cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from harkd.voice.capture import BLOCK_FRAMES, Capture, DeviceLost

pytestmark = pytest.mark.anyio

#: one PortAudio block of 16 kHz s16le silence, as the device callback receives it
BLOCK = bytes(320 * BLOCK_FRAMES * 2)


async def test_cancel_as_a_block_arrives_stops_the_frames() -> None:
    # The frame wait is woken by a block in the same loop pass that cancels its task
    # (harkd talk's sender is cancelled as the reply comes in, while the microphone keeps
    # delivering). The cancellation must end the task, not be taken as "a block came":
    # asyncio.wait_for on Python 3.11 returned the finished wait instead, so the sender
    # went on streaming and ``harkd talk --turns 1`` never exited.
    capture = Capture(None, stall=1.0)
    capture._loop = asyncio.get_running_loop()
    got: list[bytes] = []

    async def consume() -> None:
        async for frame, _ in capture.frames():
            got.append(frame)

    task = asyncio.create_task(consume())
    capture._callback(BLOCK, 320 * BLOCK_FRAMES, None, None)
    while len(got) < BLOCK_FRAMES:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the consumer waits for the next block
    capture._callback(BLOCK, 320 * BLOCK_FRAMES, None, None)
    await asyncio.sleep(0)  # the block's wake-up runs: the wait is over
    task.cancel()           # and the consumer is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_no_block_for_the_stall_time_is_device_lost() -> None:
    capture = Capture("gone", stall=0.05)
    capture._loop = asyncio.get_running_loop()
    with pytest.raises(DeviceLost, match=r"no audio for 0\.05s from gone"):
        async for _ in capture.frames():
            pass


async def test_frames_carry_their_capture_time() -> None:
    # blocks of odd sizes at 44.1 kHz: each 20 ms frame is stamped with when its first
    # sample was captured, whichever block it began in
    capture = Capture(None)
    capture.rate = 44100
    capture._loop = asyncio.get_running_loop()
    sizes = [1000, 1323, 777, 2205, 441, 3001]
    before = time.monotonic()
    capture._callback(bytes(2 * sizes[0]), sizes[0], None, None)
    after = time.monotonic()
    first = capture._ring[0][0]
    assert before - sizes[0] / 44100 <= first <= after - sizes[0] / 44100
    for i, size in enumerate(sizes[1:], 1):
        capture._add(bytes(2 * size), first + sum(sizes[:i]) / 44100)
    want = sum(sizes) * 16000 // 44100 // 320
    got: list[float] = []
    async for _, at in capture.frames():
        got.append(at)
        if len(got) == want:
            break
    assert got == pytest.approx([first + 0.02 * i for i in range(want)], abs=1e-4)
