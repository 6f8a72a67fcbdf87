"""Playing a reply on an output device (the PulseAudio null sink of the voice tests):
how much the stream buffers, and that a cancelled reply closes its stream only after its
writer thread has left it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from harkd.voice.frames import read_wav
from harkd.voice.playback import OUTPUT_LATENCY, WRITER_TIMEOUT, DeviceOut, Speaking

from .conftest import Pulse, Speak

pytestmark = [pytest.mark.anyio, pytest.mark.audio]


async def test_the_device_buffers_more_than_a_busy_writer_thread_stalls(
        pulse: Pulse) -> None:
    # PortAudio's "low" latency buffered 9 ms on the pulse device: a writer thread that
    # lost the CPU for longer underran, and PulseAudio then moved the reply's echo
    out = DeviceOut("pulse")
    await out.begin(22050)
    try:
        assert out._stream.latency >= 0.8 * OUTPUT_LATENCY
    finally:
        await out.end(False)


class HeldAt(Speaking):
    """A reply whose writer thread stops inside block ``hold`` (before writing it) until
    its stream is closed, or ``patience`` seconds have passed, and records whether the
    stream was still open when it went on."""

    def __init__(self, out: DeviceOut, hold: int, patience: float) -> None:
        super().__init__()
        self.out = out
        self.hold = hold
        self.patience = patience
        self.blocks = 0
        self.inside = threading.Event()
        self.gone_on = threading.Event()
        self.open_when_going_on: bool | None = None

    def note(self, pcm: bytes, rate: int = 16000) -> None:
        super().note(pcm, rate)
        self.blocks += 1
        if self.blocks != self.hold:
            return
        self.inside.set()
        deadline = time.monotonic() + self.patience
        while self.out._stream is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.open_when_going_on = self.out._stream is not None
        self.gone_on.set()


async def test_a_cancelled_reply_closes_its_stream_after_its_writer_left_it(
        pulse: Pulse, speak: Speak) -> None:
    # A run cancelled while it speaks (barge-in over a run, a reload, the daemon's
    # shutdown) closed its stream while the writer thread was still in it; once that write
    # was waiting out an underrun in PortAudio, the process aborted. The writer is held
    # between two blocks here; the close must wait for it. The hold's patience only lets
    # the writer go on when the close does wait, well before end() would give up on it.
    audio = read_wav(speak("this reply is cancelled while it is being played"))
    out = DeviceOut("pulse")
    speaking = HeldAt(out, hold=10, patience=WRITER_TIMEOUT / 3)

    async def play() -> None:
        await out.begin(audio.rate)
        try:
            await out.write(audio, speaking)
        finally:
            await out.end(speaking.interrupted)

    task = asyncio.create_task(play())
    await asyncio.to_thread(speaking.inside.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(speaking.gone_on.wait)
    assert speaking.open_when_going_on is True  # not closed under the writer
    assert out._stream is None  # closed once it had left
    assert speaking.blocks == 10  # and it wrote no block after the cancel


async def test_a_reply_is_played_to_its_end(pulse: Pulse, tmp_path: Path) -> None:
    # PortAudio's stop() drops what the device still buffers: with OUTPUT_LATENCY's buffer
    # a reply lost its last 0.3 s. A 1 s tone is played and the sink's monitor recorded;
    # the count is of audio samples heard, not of time.
    import numpy as np

    from harkd.voice.frames import Audio

    rate = 16000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 12000
    rec = await pulse.record(tmp_path / "sink.wav")
    try:
        out = DeviceOut("pulse")
        await out.begin(rate)
        try:
            await out.write(Audio(tone.astype(np.int16).tobytes(), rate), Speaking())
        finally:
            await out.end(False)
        await asyncio.sleep(0.3)  # the monitor's own latency; the count is of samples
    finally:
        heard = np.frombuffer(rec.stop().pcm, dtype=np.int16)
    blocks = heard[:len(heard) // 160 * 160].reshape(-1, 160)  # 10 ms each
    loud = int((np.abs(blocks).max(axis=1) > 3000).sum())
    assert loud * 160 / rate > 0.9  # seconds of the 1 s tone that reached the sink
