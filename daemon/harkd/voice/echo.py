"""Echo cancellation with a reference signal: the listener subtracts what it played.

A listener that plays its replies on the same device as its microphone hears itself. The
level heuristic (voice must be ``ratio`` times louder than the playback) fails when the
echo arrives louder than it was played (a speaker next to the mic, automatic gain) and
makes the user shout to interrupt. Here the playback keeps what it played on a wall-clock
timeline (:class:`EchoReference`), and :class:`EchoCanceller` finds, for each microphone
frame, where in that timeline its echo comes from (the lag with the strongest normalised
cross-correlation, searched by FFT every ``SEARCH_EVERY`` frames, and at once, on the audio
since, when a frame is left mostly unexplained), fits a short filter from the reference to
the microphone by least squares over the last ``WINDOW`` seconds (gain, resampling
differences and the first reflections), and hands VAD the residual: the user's voice with
the echo taken out. It costs nothing while nothing was played lately.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

from .frames import FRAME_SAMPLES, RATE, Float32, Resampler, from_pcm, to_pcm

#: seconds of playback kept
KEEP = 4.0
#: seconds of microphone audio the lag and the filter are fitted on
WINDOW = 0.4
#: the echo may arrive this long after the reference timeline says it was played ...
MAX_DELAY = 1.0
#: ... or this long before (the timeline runs ahead while an output buffer fills)
LEAD = 0.3
#: a block noted this long after the previous one ended starts after a pause
PAUSE = 0.15
#: with the echo taken out, voice must still be this fraction of the playback level
RESIDUAL = 0.25
#: below this normalised correlation the microphone is not taken to hold the echo
MIN_CORRELATION = 0.5
#: frames between lag searches
SEARCH_EVERY = 5
#: how much better (normalised correlation) a new lag must be to replace the current one
STICKY = 0.1
#: how far past a lag the clock moved the search then reaches
SEARCH_MARGIN = 0.2
#: a frame the fit leaves more than this fraction of (energy) is searched again at once
UNEXPLAINED = 0.3
#: the shortest stretch of microphone audio (frames) such a search is fitted on
MIN_FRESH = 2
#: filter taps (at 16 kHz) before and after the lag
TAPS_BEFORE, TAPS_AFTER = 8, 24
TAPS = TAPS_BEFORE + TAPS_AFTER


class EchoReference:
    """The audio this listener played in the last ``KEEP`` seconds, at 16 kHz, on a
    monotonic-clock timeline. Thread-safe: a device writer thread adds, the loop reads."""

    def __init__(self) -> None:
        self._n = int(KEEP * RATE)
        self._buf: Float32 = np.zeros(self._n, dtype=np.float32)
        self._end = 0.0
        self._rate = 0
        self._resampler: Resampler | None = None
        self._lock = threading.Lock()

    @property
    def end(self) -> float:
        """When the last sample added is due to have been played (monotonic seconds)."""
        return self._end

    def add(self, pcm: bytes, rate: int, at: float | None = None) -> None:
        """Record a block being played now (``at``), at ``rate`` Hz, s16le mono.

        Blocks written back to back follow each other on the timeline even when a writer
        runs ahead of real time (an output buffer filling) or a little behind it; a block
        more than ``PAUSE`` after the end of the last starts at ``at``, with silence in
        between.
        """
        at = time.monotonic() if at is None else at
        if rate != self._rate or self._resampler is None:
            self._rate, self._resampler = rate, Resampler(rate)
        samples = from_pcm(self._resampler.push(pcm))
        with self._lock:
            # a writer blocked by a full output buffer notes each block about when the
            # previous one is due to end; only a clear pause is silence on the timeline
            start = at if at > self._end + PAUSE else self._end
            gap = min(self._n, round((start - self._end) * RATE)) if self._end else self._n
            shift = min(self._n, gap + samples.size)
            self._buf = np.concatenate([self._buf[shift:], np.zeros(gap, np.float32),
                                        samples])[-self._n:]
            self._end = start + samples.size / RATE

    def span(self, start: float, end: float) -> Float32:
        """The reference from ``start`` to ``end`` (monotonic seconds); silence outside
        what is kept."""
        n = max(0, round((end - start) * RATE))
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            first = self._n - round((self._end - start) * RATE)
            lo, hi = max(0, first), min(self._n, first + n)
            if hi > lo:
                out[lo - first:hi - first] = self._buf[lo:hi]
        return out


class EchoCanceller:
    """Takes the echo of ``reference`` out of one microphone stream's 20 ms frames.

    Frames get a time from a clock that advances 20 ms per frame and moves to the frame's
    capture time only when the two drift more than 250 ms apart (frames dropped, a paused
    client), so the lag stays fixed within a reply and jitter does not matter; the lag moves
    with the clock then, since the frames still followed each other. The mic's
    frames carry their capture time, so a burst handled late, after the event loop
    stalled, still lines up with what was played; for sources that do not know it
    (WebSocket audio, a satellite) the time a frame is handled stands in for it.
    """

    def __init__(self, reference: EchoReference) -> None:
        self.reference = reference
        self._clock = 0.0
        self._mic: Float32 = np.zeros(int(WINDOW * RATE), dtype=np.float32)
        self._lag: float | None = None
        self._filter: Float32 | None = None
        self._since = 0
        #: microphone samples since the echo last seemed to move (searches fit on these)
        self._fresh = self._mic.size
        #: the longest lag searched: MAX_DELAY, or more once the clock moved the lag past it
        self._reach = MAX_DELAY
        #: frames handled while echo was possible, and the last correlation found
        self.active_frames = 0
        self.misfits = 0
        self.correlation = 0.0

    def __call__(self, frame: bytes, at: float | None = None) -> tuple[bytes, bool]:
        """The frame with the echo taken out, and whether there was echo to take out.
        ``at``: when the frame's first sample was captured (monotonic seconds)."""
        now = time.monotonic() if at is None else at
        t = self._clock + FRAME_SAMPLES / RATE
        if abs(t - now) > 0.25:
            if self._lag is not None:
                # frames that came in a burst, or late, followed each other all the same:
                # the echo is where it was in them, so move the lag with the clock
                self._lag += now - t
                self._reach = max(self._reach, self._lag + SEARCH_MARGIN)
            t = now
        self._clock = t
        mic = from_pcm(frame)
        self._mic = np.concatenate([self._mic[mic.size:], mic])
        if now - self.reference.end > self._reach + WINDOW or mic.size != FRAME_SAMPLES:
            self._lag = self._filter = None
            self._reach = MAX_DELAY
            return frame, False
        self._since += 1
        self._fresh = min(self._mic.size, self._fresh + mic.size)
        if self._lag is None or self._since >= SEARCH_EVERY:
            self._search(t)
            self._since = 0
        if self._lag is None or self._filter is None:
            return frame, False
        self.active_frames += 1
        residual = self._residual(mic, t)
        mic_energy = float(np.dot(mic, mic))
        left = float(np.dot(residual, residual))
        if left > UNEXPLAINED * mic_energy + 1e-7:
            # the echo may have moved (a client's speaker ran dry, the clock re-anchored):
            # look for it at once in the audio since, rather than in a window that is
            # mostly from before the move, and keep whichever fit explains this frame
            kept = self._lag, self._filter
            self._fresh = mic.size
            self._search(t)
            self._since = 0
            again = self._residual(mic, t) if self._filter is not None else residual
            again_left = float(np.dot(again, again))
            if again_left < left:
                residual, left = again, again_left
            else:
                self._lag, self._filter = kept
        if left > 1.5 * mic_energy + 1e-7:
            # the echo moved (the output's latency changed): search again at once, and
            # let the caller judge this frame by level
            self._since = SEARCH_EVERY
            self.misfits += 1
            return frame, False
        return to_pcm(residual), True

    def _residual(self, mic: Float32, t: float) -> Float32:
        """``mic``, the frame at ``t``, less the echo the current lag and filter predict."""
        assert self._lag is not None and self._filter is not None
        # rows of the reference around the lag, one per microphone sample (see _fit)
        end = t - self._lag + TAPS_BEFORE / RATE
        ref = self.reference.span(end - (FRAME_SAMPLES + TAPS - 1) / RATE, end)
        echo: Float32 = np.lib.stride_tricks.sliding_window_view(ref, TAPS) @ self._filter
        return mic - echo

    def _search(self, t: float) -> None:
        """Find the lag of the echo in the microphone audio ending at ``t`` (the window,
        or what came since the echo last seemed to move) and fit the filter; leave both
        None when the reference is silent there."""
        w = max(self._fresh, min(self._mic.size, MIN_FRESH * FRAME_SAMPLES))
        mic = self._mic[-w:]
        reach = self._reach
        ref = self.reference.span(t - w / RATE - reach, t + LEAD)
        ref_energy = np.concatenate([[0.0], np.cumsum(ref.astype(np.float64) ** 2)])
        if ref_energy[-1] < 1e-6:
            self._lag = self._filter = None
            return
        size = 1 << int(np.ceil(np.log2(ref.size + w)))
        corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(mic, size)),
                            size)[: ref.size - w + 1]
        window_energy = ref_energy[w:] - ref_energy[:-w]
        mic_energy = float(np.dot(mic, mic)) + 1e-9
        # lags where the reference is (nearly) silent cannot explain the microphone
        audible = window_energy > 1e-3 * float(window_energy.max())
        norm = np.where(audible, np.abs(corr) / np.sqrt(window_energy * mic_energy + 1e-12),
                        0.0)
        k = int(np.argmax(norm))
        if self._lag is not None:
            # keep the lag unless another one is clearly better: the user's own voice or
            # a quiet stretch must not move the filter away from a good fit
            kept = round((reach - self._lag) * RATE)
            if 0 <= kept < norm.size and norm[kept] >= norm[k] - STICKY:
                k = kept
        self.correlation = float(norm[k])
        if self.correlation < MIN_CORRELATION:  # the echo has not arrived, or is lost
            self._lag = self._filter = None
            return
        # ref[k] lines up with the window's first sample, at t - w / RATE
        self._lag = reach - k / RATE
        self._filter = self._fit(ref, k, mic)

    def _fit(self, ref: Float32, k: int, mic: Float32) -> Float32 | None:
        """Least-squares filter from the reference around ``ref[k]`` to the microphone
        window: sample ``i`` of the window is modelled from ``ref[k + i - TAPS_AFTER + 1]``
        to ``ref[k + i + TAPS_BEFORE]``."""
        w = mic.size
        seg = _slice(ref, k - TAPS_AFTER + 1, k + w + TAPS_BEFORE)
        if float(np.dot(seg, seg)) < 1e-6:
            return None
        rows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(seg, TAPS))
        # normal equations, with a little ridge so silence in the reference stays solvable
        gram = rows.T @ rows
        gram += np.eye(TAPS, dtype=np.float32) * (1e-3 * float(np.trace(gram)) / TAPS)
        h = np.linalg.solve(gram, rows.T @ mic)
        return h.astype(np.float32)


def _slice(a: Float32, lo: int, hi: int) -> Float32:
    """``a[lo:hi]`` with zeros where it runs past either end."""
    out = np.zeros(hi - lo, dtype=np.float32)
    s, e = max(lo, 0), min(hi, a.size)
    if e > s:
        out[s - lo:e - lo] = a[s:e]
    return out


class Playing(Protocol):
    """What the gate needs of the reply being played (a :class:`~.playback.Speaking`)."""

    @property
    def active(self) -> bool: ...

    def echo_level(self) -> float: ...


class EchoGate:
    """What VAD hears of one stream while the listener's replies play, and below which
    level (RMS) nothing counts as voice.

    ``reference``: the canceller's residual, which must be above ``min_level`` and a
    quarter of the playback level; while the canceller has no fit (the first frames of a
    reply, or after the echo path changed) the frame is judged as in ``level`` mode:
    voice only when ``ratio`` times louder than the playback (the heuristic from before
    the reference was kept).
    """

    def __init__(self, mode: str = "reference", ratio: float = 2.0,
                 min_level: float = 0.01) -> None:
        self.mode = mode
        self.ratio = ratio
        self.min_level = min_level
        self.reference = EchoReference() if mode == "reference" else None
        self._canceller = EchoCanceller(self.reference) if self.reference else None

    def __call__(self, frame: bytes, speaking: Playing,
                 at: float | None = None) -> tuple[bytes, float]:
        """The frame VAD hears and its floor; ``at`` as for :class:`EchoCanceller`."""
        level = speaking.echo_level()
        if self._canceller is not None:
            cleaned, echo = self._canceller(frame, at)
            if echo:
                # a good fit leaves far less of the echo than this; a stale one does not
                return cleaned, max(self.min_level, RESIDUAL * level)
        if speaking.active or level > 0.0:
            return frame, max(self.min_level, self.ratio * level)
        return frame, 0.0
