"""The wake word, offline: Whisper on each VAD turn, matched against the phrase.

Whisper tiny.en is already loaded for ``stt``, so a turn is transcribed once (with the
phrase as a decoding hint) and the transcript is matched fuzzily against the phrase at
its start: ``hey hark, turn on the lights`` wakes and carries its command, a bare
``hey hark`` wakes for a follow-up turn. ``sensitivity`` trades misses for false accepts
(0: only an exact match, 1: anything remotely like it); after an accept, matches within
``refractory`` seconds are ignored.

``engine: microwakeword`` swaps the Whisper check for a trained model that listens to
every frame (:mod:`harkd.voice.microwake`); the phrase matching here then only strips the
wake word from the transcript of a turn the model accepted.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

from ..records import dataclass

_WORD = re.compile(r"[a-z0-9']+")
#: words people put before a wake phrase that Whisper keeps
_FILLERS = frozenset({"um", "uh", "oh", "so", "okay", "ok", "and", "well"})

Engine = Literal["whisper", "microwakeword"]


@dataclass(frozen=True)
class WakeConfig:
    """Wake-word options (``wake:`` of the mic trigger)."""

    phrase: str = "hey hark"
    sensitivity: float = 0.5
    refractory: float = 2.0
    follow_up: float = 8.0
    engine: Engine = "whisper"
    #: microwakeword: a built-in model name or a model's .json (default: from the phrase)
    model: str | None = None

    def __post_init__(self) -> None:
        if not words(self.phrase):
            raise ValueError("the wake phrase needs at least one word")
        if not 0.0 <= self.sensitivity <= 1.0:
            raise ValueError("wake sensitivity must be between 0 and 1")

    @property
    def threshold(self) -> float:
        """The similarity (0..1) a transcript's start needs to count as the phrase."""
        return 1.0 - 0.45 * self.sensitivity


@dataclass(frozen=True)
class WakeMatch:
    """A transcript that starts with the wake phrase: how alike, and what follows it."""

    score: float
    heard: str
    rest: str


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WakeSpotter:
    """Matches transcripts against one wake phrase."""

    def __init__(self, config: WakeConfig) -> None:
        self.config = config
        self._phrase = words(config.phrase)
        self._joined = " ".join(self._phrase)

    def match(self, transcript: str) -> WakeMatch | None:
        heard = words(transcript)
        if not heard:
            return None
        best: tuple[float, int, int] = (0.0, 0, 0)
        n = len(self._phrase)
        for start in (0, 1) if heard[0] in _FILLERS else (0,):
            for k in range(max(1, n - 1), n + 2):
                window = heard[start:start + k]
                if not window:
                    continue
                score = difflib.SequenceMatcher(None, " ".join(window), self._joined).ratio()
                if score > best[0]:
                    best = (score, start, start + k)
        score, start, end = best
        if score < self.config.threshold:
            return None
        rest = _rest_of(transcript, end)
        return WakeMatch(round(score, 3), " ".join(heard[start:end]), rest)


def _rest_of(transcript: str, n_words: int) -> str:
    """The transcript after its first ``n_words`` words, original casing kept."""
    spans = list(_WORD.finditer(transcript.lower()))
    if n_words >= len(spans):
        return ""
    return transcript[spans[n_words].start():].strip()
