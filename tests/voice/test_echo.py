"""The echo canceller lines microphone frames up with what was played by when they were
captured, not when they are handled; frames that do not say when, by a clock that a burst
of late frames does not move."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from harkd.voice import echo
from harkd.voice.echo import RESIDUAL, SETTLE, EchoCanceller, EchoReference
from harkd.voice.frames import FRAME_SAMPLES, RATE, Float32, rms, to_pcm

FRAME = FRAME_SAMPLES / RATE


def reply(seconds: float) -> Float32:
    """A stand-in for a spoken reply: noise smoothed like voiced speech (AR(1), seeded)."""
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.0, int(seconds * RATE))
    x = np.zeros(noise.size, dtype=np.float32)
    for i in range(1, x.size):
        x[i] = 0.95 * x[i - 1] + noise[i]
    peak = float(np.abs(x).max())
    return x * np.float32(0.2 / peak)


START = 1000.0  # a monotonic time
PLAYED = reply(3.0)
# the echo comes 100 ms late, at 0.8 of the level played
HEARD = np.concatenate([np.zeros(RATE // 10, np.float32), PLAYED]) * np.float32(0.8)
#: above this level EchoGate takes a cleaned frame for voice
FLOOR = RESIDUAL * rms(to_pcm(PLAYED))


def cancel(handled: dict[int, list[int]], stamped: bool,
           monkeypatch: pytest.MonkeyPatch) -> dict[int, tuple[bytes, bool]]:
    """Play ``PLAYED`` in 20 ms blocks from ``START``; after block ``k`` the canceller
    handles the frames of what the mic heard listed in ``handled[k]``, stamped with when
    they were captured or (not ``stamped``) read at the time block ``k`` was played."""
    now = [START]
    monkeypatch.setattr(echo, "time", SimpleNamespace(monotonic=lambda: now[0]))
    reference = EchoReference()
    canceller = EchoCanceller(reference)
    results: dict[int, tuple[bytes, bool]] = {}
    for k in range(PLAYED.size // FRAME_SAMPLES):
        now[0] = START + k * FRAME
        block = PLAYED[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
        reference.add(to_pcm(block), RATE, at=now[0])  # the writer plays on
        for j in handled.get(k, []):
            frame = to_pcm(HEARD[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES])
            results[j] = canceller(frame, at=START + j * FRAME if stamped else None)
    return results


def heard_as_voice(results: dict[int, tuple[bytes, bool]],
                   since: int) -> dict[int, tuple[float, bool]]:
    """The frames from ``since`` on whose echo was not cancelled below ``FLOOR``."""
    return {j: (round(rms(cleaned), 4), found) for j, (cleaned, found) in results.items()
            if j >= since and not (found and rms(cleaned) < FLOOR)}


def after_a_stall(frames: int) -> dict[int, list[int]]:
    """Frames 60 to 60 + ``frames`` are handled late, in a burst with the next one."""
    stall = range(60, 60 + frames)
    return {k: [*stall, k] if k == stall.stop else [k]
            for k in range(PLAYED.size // FRAME_SAMPLES) if k not in stall}


def test_echo_is_cancelled_across_a_loop_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop stalls 300 ms mid-reply; the microphone frames captured meanwhile
    # wait in Capture's ring and are handled in a burst, while the reply goes on playing.
    # Timed by when they were handled, the canceller re-anchored its clock at the burst,
    # the lag into the reference jumped, and the echo got through at 1.2 times the
    # playback level: the reply barged in on itself. Timed by their capture, the frames
    # line up with the reference as if nothing had happened.
    results = cancel(after_a_stall(15), stamped=True, monkeypatch=monkeypatch)
    assert heard_as_voice(results, since=30) == {}  # found after 0.6 s


@pytest.mark.parametrize("frames", [15, 50])
def test_echo_without_capture_times_is_cancelled_across_a_burst(
        frames: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # WebSocket audio and satellites say nothing of when a frame was captured: a stall
    # (of the loop, the network or the client) of 300 ms or 1 s delays frames, which then
    # come in a burst. The clock moved to the first late frame's handling time, and back
    # when the burst had caught up: the echo got through, the reply interrupted itself.
    # A burst's frames catch up with the clock, so it stays.
    results = cancel(after_a_stall(frames), stamped=False, monkeypatch=monkeypatch)
    assert heard_as_voice(results, since=30) == {}


def test_echo_is_cancelled_after_a_client_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client stops sending for 1 s (muted, or its frames lost) and resumes: its frames
    # stay steadily 1 s later than the clock, so after SETTLE of them (0.5 s) the clock
    # moves to them and the echo is cancelled again.
    paused = range(50, 100)
    handled = {k: [k] for k in range(PLAYED.size // FRAME_SAMPLES) if k not in paused}
    results = cancel(handled, stamped=False, monkeypatch=monkeypatch)
    assert heard_as_voice(results, since=paused.stop + SETTLE) == {}


PROBE = ("import os, harkd.cli as c; c.main(['schema', '--builtin']); "
         "print(os.environ.get('OPENBLAS_NUM_THREADS'))")


def test_harkd_runs_openblas_on_one_thread_unless_told() -> None:
    # The canceller's fit is a matrix product on the event loop; with a thread per core
    # it waited for threads Whisper and Piper kept busy (174 ms at p99).
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    seen = [subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60, env={**env, **extra}).stdout.splitlines()[-1]
            for extra in ({}, {"OPENBLAS_NUM_THREADS": "2"})]
    assert seen == ["1", "2"]
