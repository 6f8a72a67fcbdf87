"""Wake word: misses on wake utterances and false accepts per hour of other speech.

    .venv/bin/python bench/wake_word.py [--phrase "hey hark"] [--sensitivity 0.5]

Wake utterances are "<phrase>, <command>" and a bare "<phrase>" in several espeak-ng
voices; non-wake speech is every command alone. Each goes through the listener's wake
path: Whisper with the phrase as a hint, then the fuzzy match.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.frames import from_pcm
from harkd.voice.stt import Whisper
from harkd.voice.wake import WakeConfig, WakeSpotter
from voice_common import COMMANDS, VOICES, espeak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phrase", default="hey hark")
    ap.add_argument("--sensitivity", type=float, default=0.5)
    ap.add_argument("--voices", default=",".join(VOICES[:3]))
    args = ap.parse_args()
    model = Whisper.load()
    spotter = WakeSpotter(WakeConfig(args.phrase, sensitivity=args.sensitivity))
    voices = args.voices.split(",")

    def heard(text: str, voice: str) -> tuple[bool, str, float]:
        audio = espeak(text, voice, pad=0.1)
        got = model.transcribe(from_pcm(audio.pcm), prompt=args.phrase).text
        return spotter.match(got) is not None, got, audio.seconds

    wake_total = misses = 0
    for voice in voices:
        for text in [args.phrase, *(f"{args.phrase}, {c}" for c in COMMANDS[:10])]:
            ok, got, _ = heard(text, voice)
            wake_total += 1
            if not ok:
                misses += 1
                print(f"  miss  {voice:10} {text!r} -> {got!r}")
    fa = 0
    seconds = 0.0
    for voice in voices:
        for text in COMMANDS:
            ok, got, secs = heard(text, voice)
            seconds += secs
            if ok:
                fa += 1
                print(f"  false {voice:10} {text!r} -> {got!r}")
    print(f"wake {args.phrase!r} sensitivity {args.sensitivity}: misses {misses}/{wake_total} "
          f"({100 * misses / wake_total:.1f}%), false accepts {fa} in {seconds / 60:.1f} min "
          f"of other speech = {fa * 3600 / seconds:.1f} per hour of speech")


if __name__ == "__main__":
    main()
