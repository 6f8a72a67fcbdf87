"""CPU of echo handling while a reply plays: what harkd spends on each 20 ms microphone
frame (and on noting each 20 ms block it plays) with ``echo: reference`` (the canceller of
harkd.voice.echo), against ``echo: level`` (the heuristic that only compares levels)
measured in the same run.

    .venv/bin/python bench/echo_cost.py [--seconds 20] [--repeats 3]

The reply is espeak-ng speech (real pauses between words and sentences); the microphone
hears it 100 ms late at 0.8 of its level, as a speaker next to the mic would, with a
little room noise, and in the ``barge-in`` case a second voice speaks over its middle. The
frames are fed as fast as the code takes them, each with the time it was captured, so
the figure is CPU per frame, reported also as a share of one core in real time (20 ms of
audio a frame). Best of ``--repeats``; numpy on one thread, as ``harkd`` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as harkd.cli sets it

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harkd.voice.echo import EchoGate
from harkd.voice.frames import FRAME_SAMPLES, RATE, Float32, resample, to_pcm
from voice_common import espeak_raw

FRAME = FRAME_SAMPLES / RATE
TEXT = ("The forecast for tomorrow is mostly sunny, with a light breeze from the west. "
        "Temperatures will reach twenty two degrees in the afternoon. In the evening, "
        "clouds move in from the coast, and there is a small chance of rain after "
        "midnight. Saturday looks warmer still, so it may be a good day for the garden. ")


class Reply:
    """What the gate asks of the playback: whether a reply plays, and how loud."""

    active = True

    def __init__(self) -> None:
        self.level = 0.0

    def echo_level(self) -> float:
        return self.level


def speech(seconds: float) -> Float32:
    samples, rate = espeak_raw(TEXT)
    one = resample(samples, rate) * np.float32(0.5)
    reps = int(np.ceil(seconds * RATE / one.size))
    return np.tile(one, reps)[: int(seconds * RATE)]


def run(mode: str, played: Float32, heard: Float32) -> tuple[float, float]:
    """CPU seconds per frame of the gate, and of noting the played blocks."""
    gate = EchoGate(mode)
    reply = Reply()
    frames = played.size // FRAME_SAMPLES
    blocks = [to_pcm(played[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]) for k in range(frames)]
    mics = [to_pcm(heard[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]) for k in range(frames)]
    levels = [float(np.sqrt(np.mean(played[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES] ** 2)))
              for k in range(frames)]
    start = 1000.0
    noting = gating = 0.0
    for k in range(frames):
        at = start + k * FRAME
        t0 = time.process_time()
        if gate.reference is not None:
            gate.reference.add(blocks[k], RATE, at=at)
        t1 = time.process_time()
        reply.level = levels[k]
        gate(mics[k], reply, at=at)
        t2 = time.process_time()
        noting += t1 - t0
        gating += t2 - t1
    return gating / frames, noting / frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    played = speech(args.seconds)
    rng = np.random.default_rng(1)
    delay = int(0.1 * RATE)
    echo = np.concatenate([np.zeros(delay, np.float32), played])[: played.size] * np.float32(0.8)
    room = rng.normal(0.0, 0.002, played.size).astype(np.float32)
    user, rate = espeak_raw("stop, stop, that is enough, thank you", "en-gb")
    voice = resample(user, rate) * np.float32(0.6)
    barge = echo + room
    at = played.size // 2
    barge[at:at + voice.size] += voice
    cases = {"echo only": echo + room, "barge-in": barge}

    print(f"Echo handling, CPU per 20 ms frame ({args.seconds:g} s of espeak-ng speech "
          f"played, heard 100 ms late at 0.8; best of {args.repeats})\n")
    print("| case | mode | gate per frame | noting a played block | share of one core |")
    print("|---|---|---|---|---|")
    for case, heard in cases.items():
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for mode in ("level", "reference"):
                g, n = run(mode, played, heard)
                if mode not in best or g + n < sum(best[mode]):
                    best[mode] = (g, n)
        for mode, (g, n) in best.items():
            print(f"| {case} | {mode} | {g * 1e3:.3f} ms | {n * 1e3:.3f} ms | "
                  f"{100 * (g + n) / FRAME:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
