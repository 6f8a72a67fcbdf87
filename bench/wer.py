"""Word error rate of the stt step (Whisper tiny.en, int8) on generated commands.

    .venv/bin/python bench/wer.py [--voices en-us,en-gb] [--piper] [--window 15]
        [--beam 1] [--prompt TEXT | --prompt home] [--resampler linear|soxr] [--no-fallback]
        [--model tiny.en | base | tiny.en+base | FOLDER] [--pair-always]

Each of the 32 commands is spoken by espeak-ng in each voice (and by Piper with --piper),
padded with 0.4 s of silence at each end (as a VAD-cut utterance has around it), resampled
from the engines' 22,050 Hz to 16 kHz, transcribed the way the stt step does it (peak
normalised, greedy unless ``--beam``) and scored word by word. ``--window`` is the encoder
window in seconds (the stt step's ``window``, 15 by default as in the step; 30 is
Whisper's own). ``--no-fallback`` turns off the stt step's ``fallback``: a doubtful greedy
decode retried with a beam of 5 (on the 30 s window, faster-whisper's temperature
fallback). ``--prompt home`` is :data:`HOME_PROMPT`, the vocabulary of
the Home Assistant example in docs/voice.md. ``--resampler soxr`` resamples with soxr's
band-limited HQ filter instead of the daemon's linear one (comparison only). ``--model``
is the stt step's ``model``: ``base`` is the packaged multilingual Whisper base (the
``whisper-base`` extra), ``tiny.en+base`` the pair that checks itself (when tiny.en at beam
5 is unsure, base decodes too and the transcript likelier under both wins;
``--pair-always`` asks base every time).

Two scorings are printed: ``plain`` (lower-cased words, digits 0-12 spelled out, as
before issue 15's rework) and ``whisper`` (OpenAI Whisper's ``EnglishTextNormalizer``,
from the ``whisper-normalizer`` package: contractions expanded, numbers as digits,
British spellings made American, fillers dropped: the scoring WER figures are usually
quoted with).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.frames import RATE, Float32, from_pcm, normalise, resample
from harkd.voice.stt import PAIR_CONFIDENT, Whisper
from voice_common import COMMANDS, espeak_raw, wer, whisper_wer

#: the vocabulary of a Home Assistant voice pipeline (the stt step's ``prompt``)
HOME_PROMPT = ("Lights, lamp, blinds, fan, heating, thermostat, garage door, alarm, timer, "
               "music, podcast, volume, weather, calendar, shopping list.")


def to_16k(samples: Float32, rate: int, how: str) -> Float32:
    if how == "soxr":
        import soxr

        return np.asarray(soxr.resample(samples, rate, RATE, quality="HQ"), dtype=np.float32)
    return resample(samples, rate)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voices", default="en-us,en-gb")
    ap.add_argument("--piper", action="store_true")
    ap.add_argument("--window", type=float, default=15.0)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--resampler", choices=("linear", "soxr"), default="linear")
    ap.add_argument("--no-fallback", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--pair-always", action="store_true",
                    help="a pair's second model runs on every command (not only when the "
                         "first is unsure)")
    args = ap.parse_args()
    prompt = HOME_PROMPT if args.prompt == "home" else args.prompt
    model = Whisper.load(args.model)
    raw: list[tuple[str, str, Float32, int]] = []
    for voice in args.voices.split(","):
        raw += [(voice, c, *espeak_raw(c, voice)) for c in COMMANDS]
    if args.piper:
        from harkd.voice.tts import PiperTTS

        piper = PiperTTS()
        for c in COMMANDS:
            a = piper.synthesize(c)
            raw.append(("piper", c, from_pcm(a.pcm), a.rate))
    pad = np.zeros(int(0.4 * RATE), dtype=np.float32)
    totals: dict[str, dict[str, list[int]]] = {"plain": {}, "whisper": {}}
    elapsed: list[float] = []
    for voice, ref, samples, rate in raw:
        audio = np.concatenate([pad, to_16k(samples, rate, args.resampler), pad])
        t0 = time.perf_counter()
        hyp = model.transcribe(normalise(audio), beam_size=args.beam, prompt=prompt,
                               window=args.window, fallback=not args.no_fallback,
                               confident=math.inf if args.pair_always else PAIR_CONFIDENT).text
        elapsed.append(time.perf_counter() - t0)
        for scoring, score in (("plain", wer), ("whisper", whisper_wer)):
            e, n = score(ref, hyp)
            t = totals[scoring].setdefault(voice, [0, 0])
            t[0] += e
            t[1] += n
        if wer(ref, hyp)[0] or whisper_wer(ref, hyp)[0]:
            print(f"  {voice:10} {ref!r} -> {hyp!r}")
    for scoring, by_voice in totals.items():
        all_e = sum(t[0] for t in by_voice.values())
        all_n = sum(t[1] for t in by_voice.values())
        cells = "  ".join(f"{voice} {100 * e / n:4.1f}% ({e}/{n})"
                          for voice, (e, n) in by_voice.items())
        print(f"WER {scoring:8} {cells}  overall {100 * all_e / all_n:4.1f}%")
    print(f"{len(raw)} utterances; stt median {1000 * sorted(elapsed)[len(elapsed) // 2]:.0f} "
          f"ms per utterance (model {args.model or 'tiny.en'}, window {args.window:g} s, "
          f"beam {args.beam}{', pair always' if args.pair_always else ''}, prompt "
          f"{'none' if prompt is None else repr(args.prompt)}, resampler {args.resampler}"
          f"{', no fallback' if args.no_fallback else ''})")


if __name__ == "__main__":
    main()
