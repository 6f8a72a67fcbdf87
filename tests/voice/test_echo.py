"""The echo canceller lines microphone frames up with what was played by when they were
captured, not when they are handled."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from harkd.voice.echo import RESIDUAL, EchoCanceller, EchoReference
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


def test_echo_is_cancelled_across_a_loop_stall() -> None:
    # The event loop stalls 300 ms mid-reply; the microphone frames captured meanwhile
    # wait in Capture's ring and are handled in a burst, while the reply goes on playing.
    # Timed by when they were handled, the canceller re-anchored its clock at the burst,
    # the lag into the reference jumped, and the echo got through at 1.2 times the
    # playback level: the reply barged in on itself. Timed by their capture, the frames
    # line up with the reference as if nothing had happened.
    played = reply(3.0)
    heard = np.concatenate([np.zeros(RATE // 10, np.float32), played]) * np.float32(0.8)
    # the echo comes 100 ms late, at 0.8 of the level played
    reference = EchoReference()
    canceller = EchoCanceller(reference)
    start = 1000.0  # a monotonic time; the canceller reads no clock when given one
    stall = range(60, 75)
    results: dict[int, tuple[bytes, bool]] = {}
    for k in range(played.size // FRAME_SAMPLES):
        block = played[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
        reference.add(to_pcm(block), RATE, at=start + k * FRAME)  # the writer plays on
        if k in stall:
            continue
        for j in [*stall, k] if k == stall.stop else [k]:
            frame = to_pcm(heard[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES])
            results[j] = canceller(frame, at=start + j * FRAME)
    floor = RESIDUAL * rms(to_pcm(played))  # above this EchoGate takes it for voice
    late = {j: (round(rms(cleaned), 4), echo) for j, (cleaned, echo) in results.items()
            if j >= 30 and not (echo and rms(cleaned) < floor)}  # found after 0.6 s
    assert late == {}, late


def test_echo_is_found_again_at_once_after_the_speaker_ran_dry() -> None:
    # A WebSocket client's speaker runs dry for 100 ms while the daemon's loop stalls, then
    # plays on from where it was: from then on the echo comes 100 ms later than before,
    # though the reference, written back to back, has no gap. The canceller kept the old
    # lag until its next search and then fitted a window mostly from before the move, so
    # frames went on being taken for cancelled with the echo still in them. It searches
    # the audio since the move at once and keeps whichever fit explains the frame.
    played = reply(3.0)
    dry = 60 * FRAME_SAMPLES  # the speaker plays silence for 5 frames from frame 60
    heard = np.concatenate([np.zeros(RATE // 10, np.float32), played[:dry - RATE // 10],
                            np.zeros(5 * FRAME_SAMPLES, np.float32),
                            played[dry - RATE // 10:]])[:played.size] * np.float32(0.8)
    reference = EchoReference()
    canceller = EchoCanceller(reference)
    start = 1000.0
    results: dict[int, tuple[bytes, bool]] = {}
    for k in range(played.size // FRAME_SAMPLES):
        block = played[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
        reference.add(to_pcm(block), RATE, at=start + k * FRAME)
        frame = to_pcm(heard[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])
        results[k] = canceller(frame, at=start + k * FRAME)
    floor = RESIDUAL * rms(to_pcm(played))
    # the silent frames hold no echo; the first frame it is back in is judged by level
    through = {k: (round(rms(cleaned), 4), echo) for k, (cleaned, echo) in results.items()
               if k >= 30 and k not in range(60, 66) and not (echo and rms(cleaned) < floor)}
    assert through == {}, through


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
