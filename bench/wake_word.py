"""Wake word: misses on wake utterances and false accepts per hour of other speech, for
the Whisper engine and the trained microWakeWord engine, on the same generated speech.

    .venv/bin/python bench/wake_word.py [--phrase "okay nabu"] [--engines whisper,microwakeword]
                                        [--sensitivity 0.5] [--voices en-us,en-gb,en-us+m3,piper]

Wake utterances are "<phrase>, <command>" and a bare "<phrase>" in several espeak-ng voices
and Piper's; other speech is every command alone. The Whisper engine goes through the
listener's wake path (Whisper with the phrase as a hint, then the fuzzy match); the
microWakeWord engine feeds each clip's 20 ms frames to the model, as the listener does.
A phrase the model was not trained on (microwakeword ships okay_nabu, hey_jarvis,
hey_mycroft, alexa) is measured for Whisper only. CPU seconds per second of audio are
printed for each engine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.frames import Audio, from_pcm, normalise, resample, to_pcm
from harkd.voice.microwake import BUILTIN, MicroWake
from harkd.voice.stt import Whisper
from harkd.voice.tts import PiperTTS
from harkd.voice.wake import WakeConfig, WakeSpotter
from voice_common import COMMANDS, VOICES, espeak

Detector = Callable[[Audio], tuple[bool, str]]


def whisper_engine(phrase: str, sensitivity: float) -> Detector:
    model = Whisper.load()
    spotter = WakeSpotter(WakeConfig(phrase, sensitivity=sensitivity))

    def detect(audio: Audio) -> tuple[bool, str]:
        got = model.transcribe(from_pcm(audio.pcm), prompt=phrase).text
        return spotter.match(got) is not None, got

    return detect


def micro_engine(phrase: str, sensitivity: float) -> Detector:
    config = WakeConfig(phrase, sensitivity=sensitivity, engine="microwakeword")

    def detect(audio: Audio) -> tuple[bool, str]:
        model = MicroWake(config)  # a fresh stream per clip
        pcm = audio.pcm
        best = max((model.push(pcm[i:i + 640]) or 0.0
                    for i in range(0, len(pcm) - 639, 640)), default=0.0)
        return best > 0.0, f"p={best:.2f}"

    return detect


def speech(voices: list[str]) -> Callable[[str, str], Audio]:
    piper = PiperTTS() if "piper" in voices else None
    cache: dict[tuple[str, str], Audio] = {}

    def say(text: str, voice: str) -> Audio:
        if (text, voice) not in cache:
            if voice == "piper":
                assert piper is not None
                a = piper.synthesize(text)
                pad = b"\0" * 3200
                cache[text, voice] = Audio(pad + to_pcm(normalise(resample(
                    from_pcm(a.pcm), a.rate))) + pad)
            else:
                cache[text, voice] = espeak(text, voice, pad=0.1)
        return cache[text, voice]

    return say


def measure(name: str, detect: Detector, phrase: str, voices: list[str],
            say: Callable[[str, str], Audio]) -> None:
    cpu0 = time.process_time()
    audio_seconds = 0.0
    wake_total = misses = 0
    for voice in voices:
        for text in [phrase, *(f"{phrase}, {c}" for c in COMMANDS[:10])]:
            audio = say(text, voice)
            ok, got = detect(audio)
            audio_seconds += audio.seconds
            wake_total += 1
            if not ok:
                misses += 1
                print(f"  {name} miss  {voice:10} {text!r} -> {got!r}")
    fa = 0
    other = 0.0
    for voice in voices:
        for text in COMMANDS:
            audio = say(text, voice)
            ok, got = detect(audio)
            other += audio.seconds
            if ok:
                fa += 1
                print(f"  {name} false {voice:10} {text!r} -> {got!r}")
    audio_seconds += other
    cpu = time.process_time() - cpu0
    print(f"{name:13} {phrase!r}: misses {misses}/{wake_total} "
          f"({100 * misses / wake_total:.1f}%), false accepts {fa} in {other / 60:.1f} min "
          f"of other speech = {fa * 3600 / other:.1f} per hour of speech; "
          f"CPU {cpu / audio_seconds:.3f} s per s of audio")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phrase", default="okay nabu")
    ap.add_argument("--engines", default="whisper,microwakeword")
    ap.add_argument("--sensitivity", type=float, default=0.5)
    ap.add_argument("--voices", default=",".join([*VOICES[:3], "piper"]))
    args = ap.parse_args()
    voices = args.voices.split(",")
    say = speech(voices)
    for engine in args.engines.split(","):
        if engine == "microwakeword" and "_".join(args.phrase.split()) not in BUILTIN:
            print(f"microwakeword has no model for {args.phrase!r} ({', '.join(BUILTIN)})")
            continue
        make = whisper_engine if engine == "whisper" else micro_engine
        measure(engine, make(args.phrase, args.sensitivity), args.phrase, voices, say)


if __name__ == "__main__":
    main()
