"""Shared helpers of the voice benches: generated speech, word error rate, percentiles."""

from __future__ import annotations

import re
import subprocess
import tempfile
import wave
from functools import cache
from pathlib import Path
from typing import Any

from harkd.voice.frames import Audio, Float32, from_pcm, normalise, resample, to_pcm

COMMANDS = [
    "turn on the kitchen lights", "turn off the bedroom lamp", "what time is it",
    "set a timer for ten minutes", "what is the weather tomorrow", "play some jazz music",
    "stop the music", "open the garage door", "close the living room blinds",
    "how warm is it inside", "remind me to call mom", "add milk to the shopping list",
    "what is on my calendar today", "dim the lights in the hallway",
    "lock the front door", "is the back door locked", "turn the heating up",
    "set the alarm for seven", "cancel the timer", "read me the news",
    "how long until sunset", "water the garden at six", "turn on the fan",
    "what is the capital of france", "tell me a joke", "pause the podcast",
    "skip to the next song", "turn the volume down", "start the vacuum cleaner",
    "good night", "switch off all the lights", "what day is it today",
]

VOICES = ["en-us", "en-gb", "en-us+m3", "en-us+f2", "en-gb-x-rp"]


def espeak_raw(text: str, voice: str = "en-us") -> tuple[Float32, int]:
    """``text`` spoken by espeak-ng: float samples at espeak's own rate, and the rate."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True)
        with wave.open(str(out), "rb") as w:
            return from_pcm(w.readframes(w.getnframes())), w.getframerate()


def espeak(text: str, voice: str = "en-us", pad: float = 0.4) -> Audio:
    """``text`` spoken by espeak-ng in the internal format, normalised, padded."""
    samples, rate = espeak_raw(text, voice)
    silence = b"\0" * (int(pad * 16000) * 2)
    return Audio(silence + to_pcm(normalise(resample(samples, rate))) + silence)


NUMBERS = dict(enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven",
                          "eight", "nine", "ten", "eleven", "twelve"]))


def words(text: str) -> list[str]:
    """Lower-cased words with digits spelled out (Whisper writes "10" for "ten")."""
    found = re.findall(r"[a-z0-9']+", text.lower())
    return [NUMBERS.get(int(w), w) if w.isdigit() else w for w in found]


@cache
def _whisper_normaliser() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def whisper_words(text: str) -> list[str]:
    """Words as OpenAI Whisper's English normaliser gives them (the usual WER scoring):
    "10"/"ten" both "10", "what's" "what is", British spellings American, no fillers."""
    return str(_whisper_normaliser()(text)).split()


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits, reference words) by Levenshtein distance over :func:`words`."""
    return edits(words(ref), words(hyp))


def whisper_wer(ref: str, hyp: str) -> tuple[int, int]:
    """As :func:`wer`, over :func:`whisper_words`."""
    return edits(whisper_words(ref), whisper_words(hyp))


def edits(r: list[str], h: list[str]) -> tuple[int, int]:
    """(word edits, reference words): the Levenshtein distance of two word lists."""
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
