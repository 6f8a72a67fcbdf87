"""Playing speech: to a sounddevice output, or back to a WebSocket client, interruptibly.

A :class:`Speaking` is the shared state of one reply being spoken. The ``play`` step
writes through it; the listener that started the run reads its level (to ignore its own
voice coming back through the microphone) and interrupts it on barge-in. Audio is written
in 20 ms blocks and the interrupt is checked between blocks, and a device stream is
aborted (its buffer dropped), so playback stops well within 200 ms however much the
device buffers (:data:`OUTPUT_LATENCY`); the ``play`` step does not wait for the next
sentence either (:meth:`Speaking.wait`).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..logs import get_logger
from .frames import RATE, Audio, rms

if TYPE_CHECKING:
    from .echo import EchoReference

log = get_logger("harkd.voice")

BLOCK_SECONDS = 0.02
#: seconds of audio a device stream buffers. A writer thread that loses the CPU (or the
#: GIL) for longer than the buffer underruns: the reply stutters, and the rest of it plays
#: that much later than the listener's echo reference has it (a gap under ``echo.PAUSE``
#: is not on the timeline), so the echo moves within the reply and the canceller can lose
#: it. PortAudio's "low" latency was 9 ms on the pulse device, and every loaded run of
#: tests/voice/test_mic.py that heard its own reply had underruns. An interrupt aborts
#: the stream, dropping what is buffered.
OUTPUT_LATENCY = 0.25
#: how long ``DeviceOut.end`` waits for a write still in PortAudio before it gives up on
#: closing the stream
WRITER_TIMEOUT = 3.0
#: how far ahead of real time audio is sent to a client (it buffers this much)
CLIENT_LEAD = 0.25
#: how long the loudest recent output counts as "what the mic may hear of us"
ECHO_MEMORY = 0.6


class Speaking:
    """One listener's current reply: whether it plays, how loud, and its interrupt.

    A device writer thread notes the level (and reads ``interrupted``), the event loop
    reads the level; :meth:`interrupt` is called on the event loop, where the ``play``
    step awaits it (:meth:`wait`). With an ``echo`` reference (the listener's), what is
    played is also kept there, so the listener can take it out of what its microphone
    hears.
    """

    def __init__(self, echo: EchoReference | None = None) -> None:
        self.echo = echo
        self._interrupted = asyncio.Event()
        self._levels: collections.deque[tuple[float, float]] = collections.deque(maxlen=64)
        self._lock = threading.Lock()
        self.active = False
        self.interrupted_at: float | None = None
        self.reason = ""

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    def interrupt(self, reason: str = "interrupt") -> None:
        if not self._interrupted.is_set():
            self.interrupted_at = time.monotonic()
            self.reason = reason
            self._interrupted.set()

    async def wait(self) -> None:
        """Return once the reply is interrupted."""
        await self._interrupted.wait()

    def note(self, pcm: bytes, rate: int = RATE) -> None:
        """Record the level (and, for echo cancellation, the audio) of a block that is
        being played now."""
        with self._lock:
            self._levels.append((time.monotonic(), rms(pcm)))
        if self.echo is not None:
            self.echo.add(pcm, rate)

    def echo_level(self) -> float:
        """The level of what was played in the last ``ECHO_MEMORY`` seconds (0 when
        silent): the 80th percentile of its 20 ms blocks, so one loud syllable does not
        deafen the listener but ordinary speech of ours is covered."""
        cutoff = time.monotonic() - ECHO_MEMORY
        with self._lock:
            levels = sorted(lv for t, lv in self._levels if t >= cutoff)
        if not levels:
            return 0.0
        return levels[int(0.8 * (len(levels) - 1))]


class AudioOut(Protocol):
    """Where the ``play`` step sends speech. Each method is awaited from the event loop."""

    async def begin(self, rate: int) -> None: ...

    async def write(self, audio: Audio, speaking: Speaking) -> None: ...

    async def end(self, interrupted: bool) -> None: ...


def _blocks(audio: Audio) -> list[bytes]:
    n = max(2, int(audio.rate * BLOCK_SECONDS) * 2)
    return [audio.pcm[i:i + n] for i in range(0, len(audio.pcm), n)]


class DeviceOut:
    """A sounddevice output stream, written from a thread in 20 ms blocks.

    PortAudio must not close or abort a stream while another thread writes to it (that
    aborted the process: a cancelled reply closed its stream while the write waited out
    an underrun). So a cancelled :meth:`write` stops its thread after the block it is
    writing, and :meth:`end` closes only once that thread has returned.
    """

    def __init__(self, device: str | int | None, volume: float = 1.0) -> None:
        self.device = device
        self.volume = volume
        self._stream: Any = None
        self._rate = 0
        self._stop = threading.Event()
        self._writer: asyncio.Future[None] | None = None

    async def begin(self, rate: int) -> None:
        await asyncio.to_thread(self._open, rate)

    def _open(self, rate: int) -> None:
        import sounddevice as sd

        self._rate = rate
        self._stream = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16",
                                          device=self.device, latency=OUTPUT_LATENCY)
        self._stream.start()

    async def write(self, audio: Audio, speaking: Speaking) -> None:
        if audio.rate != self._rate:
            from .frames import from_pcm, resample, to_pcm

            audio = Audio(to_pcm(resample(from_pcm(audio.pcm), audio.rate, self._rate)),
                          self._rate)
        if self.volume != 1.0:
            from .frames import from_pcm, to_pcm

            audio = Audio(to_pcm(from_pcm(audio.pcm) * self.volume), audio.rate)
        writer = asyncio.ensure_future(asyncio.to_thread(self._write, audio, speaking))
        self._writer = writer
        try:
            await asyncio.shield(writer)
        except asyncio.CancelledError:
            self._stop.set()  # the thread returns after the block it is writing
            raise

    def _write(self, audio: Audio, speaking: Speaking) -> None:
        for block in _blocks(audio):
            if speaking.interrupted or self._stop.is_set():
                return
            speaking.note(block, self._rate)
            self._stream.write(block)

    async def end(self, interrupted: bool) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            self._stop.set()
            await asyncio.wait({writer}, timeout=WRITER_TIMEOUT)
            if not writer.done():
                # closing it under the write could take the process down; leave it open
                log.warning("playback_close_stuck", timeout=WRITER_TIMEOUT)
                return
        if writer is not None and not writer.cancelled():
            writer.exception()  # a cancelled write's error: its stream is closed below
        await asyncio.to_thread(self._close, interrupted)

    def _close(self, interrupted: bool) -> None:
        if self._stream is None:
            return
        try:
            if interrupted:
                self._stream.abort()
            else:
                # PortAudio's stop() does not play out what is buffered (on the pulse
                # device it cut a reply's last 0.3 s): push it out with silence first.
                frames = round(self._stream.latency * self._rate)
                self._stream.write(bytes(2 * frames))
                self._stream.stop()
        finally:
            self._stream.close()
            self._stream = None


Send = Callable[[Any], Awaitable[None]]


class ClientOut:
    """Speech sent to a WebSocket client: ``audio`` header, binary frames, ``audio_end``.

    Frames go out at real-time pace, ``CLIENT_LEAD`` ahead, so an interrupt leaves little
    already sent and the echo level tracks what the client is playing now.
    """

    def __init__(self, send_json: Send, send_bytes: Send) -> None:
        self._json = send_json
        self._bytes = send_bytes
        self._t0 = 0.0
        self._sent = 0.0

    async def begin(self, rate: int) -> None:
        await self._json({"type": "audio", "sample_rate": rate, "format": "s16le"})
        self._t0 = time.monotonic()
        self._sent = 0.0

    async def write(self, audio: Audio, speaking: Speaking) -> None:
        for block in _blocks(audio):
            if speaking.interrupted:
                return
            ahead = self._t0 + self._sent - time.monotonic()
            if ahead > CLIENT_LEAD:
                await asyncio.sleep(ahead - CLIENT_LEAD)
            if speaking.interrupted:
                return
            speaking.note(block, audio.rate)
            await self._bytes(block)
            self._sent += len(block) / 2 / audio.rate
        # a gap between sentences (synthesis was slower than playback) restarts the clock
        if self._t0 + self._sent < time.monotonic():
            self._t0, self._sent = time.monotonic(), 0.0

    async def end(self, interrupted: bool) -> None:
        await self._json({"type": "audio_end", "interrupted": interrupted})
