"""Playing a reply on an output device (the PulseAudio null sink of the voice tests):
how much the stream buffers, that a cancelled reply closes its stream only after its
writer thread has left it, and that an interrupted reply's play step ends as interrupted
without waiting for its next sentence."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from harkd.core.run import Run, StepRecord
from harkd.streams import TextStream
from harkd.testing import run_daemon
from harkd.voice import AUDIO_OUT, SPEAKING
from harkd.voice.frames import Audio, read_wav
from harkd.voice.playback import OUTPUT_LATENCY, WRITER_TIMEOUT, DeviceOut, Speaking

from .conftest import Models, Pulse, Speak

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


REPLY = """\
trigger: {http: {}}
steps:
  - tts: {}
  - play: {}
"""
#: only keeps a broken build from hanging the session: the old play step waited for the
#: held synthesis for ever. A passing run ends at the interrupt, whatever the machine.
HANG_GUARD = 30.0


class Watched(DeviceOut):
    """The pulse device; ``writing`` is set once a sentence is being written, ``written``
    once a sentence's write has returned (the play step then asks for the next one)."""

    def __init__(self) -> None:
        super().__init__("pulse")
        self.writing = asyncio.Event()
        self.written = asyncio.Event()

    async def write(self, audio: Audio, speaking: Speaking) -> None:
        self.writing.set()
        await super().write(audio, speaking)
        self.written.set()


@asynccontextmanager
async def interrupted(tmp_path: Path, models: Models, at: str
                      ) -> AsyncIterator[tuple[asyncio.Task[Any], Run]]:
    """A reply of two sentences interrupted ``at`` "writing" (its first sentence plays)
    or "written" (between the two) while the real Piper, shared by every pipeline, is
    busy elsewhere: its lock is held, so the second sentence cannot be synthesized until
    the block is left. Yields the run's task and the run."""
    more = asyncio.Event()

    async def text() -> AsyncIterator[str]:
        yield "This is the first sentence of a long reply. "
        await more.wait()  # the LLM is still writing
        yield "The second one waits for the synthesizer."

    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("reply", REPLY)
        bound = d.daemon.catalog.bound("reply")
        assert bound is not None
        out, speaking = Watched(), Speaking()
        run = bound.new_run(TextStream(text()), {"kind": "test"}, streaming=True)
        run.extra.update({AUDIO_OUT: out, SPEAKING: speaking})
        task = asyncio.create_task(bound.run(run))
        await (out.writing if at == "writing" else out.written).wait()
        busy = models.piper._lock
        assert busy.acquire(blocking=False)  # nothing synthesizes: the text is not there
        try:
            more.set()
            speaking.interrupt("barge_in")
            yield task, run
        finally:
            busy.release()
            await asyncio.wait({task})


def played(run: Run) -> StepRecord:
    return next(s for s in run.steps if s.kind == "play")


@pytest.mark.parametrize("at", ["writing", "written"])
async def test_an_interrupt_ends_the_reply_while_its_next_sentence_synthesizes(
        tmp_path: Path, models: Models, pulse: Pulse, at: str) -> None:
    # Seen in test_mic: the interrupted reply waited for its next sentence (Piper slowed
    # by the next turn's Whisper), that turn started meanwhile and cancelled its run.
    async with interrupted(tmp_path, models, at) as (task, run):
        await asyncio.wait({task}, timeout=HANG_GUARD)
        assert task.done(), "the play step waits for the next sentence"
        result = task.result()
        record = played(run)
        assert result.ok, result
        assert record.detail["interrupted"] is True
        assert record.detail["interrupt"] == "barge_in"


async def test_a_reply_cancelled_after_its_interrupt_records_it(
        tmp_path: Path, models: Models, pulse: Pulse) -> None:
    # The next turn cancels a run still finishing (Listener._start): its play step keeps
    # what it did, that it was interrupted included.
    async with interrupted(tmp_path, models, "written") as (task, run):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = played(run)
        assert record.status == "cancelled"
        assert record.detail["interrupted"] is True
        assert record.detail["interrupt"] == "barge_in"
        assert record.detail["seconds"] > 1.0  # the first sentence was played
