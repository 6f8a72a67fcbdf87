"""Word error rate of the stt step (Whisper tiny.en, int8) on generated commands.

    .venv/bin/python bench/wer.py [--voices en-us,en-gb] [--piper] [--window 15]

Each of the 32 commands is spoken by espeak-ng in each voice (and by Piper with --piper),
transcribed the way the stt step does it (normalised, greedy), and scored word by word.
``--window`` sets the encoder window in seconds (the stt step's ``window``; 30 is
Whisper's own).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.frames import Audio, from_pcm, normalise, resample, to_pcm
from harkd.voice.stt import Whisper
from voice_common import COMMANDS, espeak, wer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voices", default="en-us,en-gb")
    ap.add_argument("--piper", action="store_true")
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()
    model = Whisper.load()
    sources: list[tuple[str, str, Audio]] = []
    for voice in args.voices.split(","):
        sources += [(voice, c, espeak(c, voice)) for c in COMMANDS]
    if args.piper:
        from harkd.voice.tts import PiperTTS

        piper = PiperTTS()
        for c in COMMANDS:
            a = piper.synthesize(c)
            sources.append(("piper", c, Audio(to_pcm(resample(from_pcm(a.pcm), a.rate)))))
    totals: dict[str, list[int]] = {}
    elapsed: list[float] = []
    for voice, ref, audio in sources:
        t0 = time.perf_counter()
        hyp = model.transcribe(normalise(from_pcm(audio.pcm)), window=args.window).text
        elapsed.append(time.perf_counter() - t0)
        e, n = wer(ref, hyp)
        t = totals.setdefault(voice, [0, 0])
        t[0] += e
        t[1] += n
        if e:
            print(f"  {voice:10} {ref!r} -> {hyp!r}")
    all_e = sum(t[0] for t in totals.values())
    all_n = sum(t[1] for t in totals.values())
    for voice, (e, n) in totals.items():
        print(f"WER {voice:10} {100 * e / n:5.1f}%  ({e}/{n} words)")
    print(f"WER overall    {100 * all_e / all_n:5.1f}%  over {len(sources)} utterances; "
          f"stt median {1000 * sorted(elapsed)[len(elapsed) // 2]:.0f} ms per utterance "
          f"(window {args.window:g} s)")


if __name__ == "__main__":
    main()
