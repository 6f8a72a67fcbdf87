"""Microphone capture with sounddevice, off the event loop, into a bounded ring.

PortAudio calls :meth:`Capture._callback` on its own thread with each block; the callback
only copies the bytes, stamped with when they were captured, into a bounded deque (the
oldest block is dropped if the loop falls behind, and counted) and wakes the loop at most
once per batch. The loop side converts blocks to 20 ms frames of the internal format, each
with its capture time, so a loop that stalls and then handles a burst of frames still knows
when each was heard (the echo canceller lines them up with what was played). A device
that stops delivering (unplugged, the sound server gone) raises :class:`DeviceLost` so the
caller can reopen it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

from ..errors import HarkError
from ..logs import get_logger
from .frames import FRAME_MS, RATE, Framer, Resampler

log = get_logger("harkd.voice")


#: frames per PortAudio callback: 60 ms blocks wake the loop a third as often as 20 ms ones
BLOCK_FRAMES = 3


class DeviceLost(HarkError, OSError):
    """The capture device failed or went silent. Raised by :meth:`Capture.frames`."""


class Capture:
    """One open input stream. ``open`` and ``close`` are blocking: call them in a thread.

    The stream is opened at 16 kHz mono when the device allows it, else at the device's
    own rate and channels and converted with numpy.
    """

    def __init__(self, device: str | int | None, *, ring_seconds: float = 3.0,
                 stall: float = 2.0) -> None:
        self.device = device
        self.stall = stall
        self.rate = RATE
        self.channels = 1
        self.overruns = 0
        self.dropped = 0
        self._ring_blocks = max(4, int(ring_seconds * 1000 / FRAME_MS))
        #: (capture time of the first sample, block)
        self._ring: collections.deque[tuple[float, bytes]] = collections.deque(
            maxlen=self._ring_blocks)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._error: str | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        import sounddevice as sd

        self._loop = loop
        blocksize = RATE * FRAME_MS * BLOCK_FRAMES // 1000
        try:
            stream = sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16",
                                       blocksize=blocksize, device=self.device,
                                       callback=self._callback)
        except sd.PortAudioError:
            info = sd.query_devices(self.device, "input")
            self.rate = int(info["default_samplerate"])
            self.channels = max(1, min(2, int(info["max_input_channels"])))
            stream = sd.RawInputStream(samplerate=self.rate, channels=self.channels,
                                       dtype="int16", device=self.device,
                                       blocksize=self.rate * FRAME_MS * BLOCK_FRAMES // 1000,
                                       callback=self._callback)
        stream.start()
        self._stream = stream

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
            finally:
                stream.close()

    def describe(self) -> str:
        if self._stream is None:
            return "closed"
        return f"{self._stream.device} at {self.rate} Hz x{self.channels}"

    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.overruns += 1
        # The block ends about now. Not PortAudio's time.inputBufferAdcTime: through
        # PulseAudio it is on the wall clock (which NTP may step), and it ran 0.6 s behind
        # the callback for the stream's first second. The entry time kept within 8 ms of
        # the sample clock under load, and the echo canceller smooths that jitter.
        self._add(bytes(indata), monotonic() - frames / self.rate)

    def _add(self, block: bytes, at: float) -> None:
        """Queue a block whose first sample was captured at ``at``, and wake the loop."""
        with self._lock:
            if len(self._ring) == self._ring_blocks:
                self.dropped += 1
            self._ring.append((at, block))
            if self._wake_pending or self._loop is None:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop closed while the device was still delivering
            pass

    def _drain(self) -> list[tuple[float, bytes]]:
        with self._lock:
            blocks = list(self._ring)
            self._ring.clear()
            self._wake_pending = False
        return blocks

    async def frames(self) -> AsyncIterator[tuple[bytes, float]]:
        """20 ms frames of the internal format as they arrive, each with when its first
        sample was captured (``time.monotonic`` seconds); raises DeviceLost."""
        framer = Framer()
        resampler = Resampler(self.rate, self.channels)
        while True:
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                # comes as the wait finishes (a block arrived), and the caller's task
                # then goes on reading frames after it was told to stop.
                async with asyncio.timeout(self.stall):
                    await self._ready.wait()
            except TimeoutError:
                active = self._stream is not None and self._stream.active
                raise DeviceLost(f"no audio for {self.stall:g}s from {self.device or 'default'}"
                                 + ("" if active else " (stream stopped)")) from None
            self._ready.clear()
            for at, block in self._drain():
                start = at - framer.pending  # the framer's leftover came just before
                for i, frame in enumerate(framer.push(resampler.push(block))):
                    yield frame, start + i * FRAME_MS / 1000
