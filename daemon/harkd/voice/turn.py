"""End of turn: whether a pause means the user has finished, judged early, with the reply
started speculatively.

The endpointer ends a turn after ``silence`` (1 s by default) without voice. At the first
pause of ``min_silence`` (200 ms) a :class:`TurnEnder` runs one pass in a worker thread:
it transcribes the turn so far with the pipeline's own ``stt`` step (when the pipeline
starts with one), and asks whether the turn sounds complete:

* ``heuristic``: the transcript does not end in a connective, article or preposition
  ("turn on the", "remind me to") and not in a comma;
* ``smart-turn``: that, and Pipecat's Smart Turn v3 model (an ONNX file shipped in the
  ``pipecat-ai`` wheel, run with onnxruntime) hears a finished turn in the last 8 s of
  audio. The model alone is not enough on synthetic voices: it hears espeak-ng and Piper
  fragments as finished (their prosody falls at every stop), so the text check vetoes it;
* ``off``: only the ``silence`` rule ends a turn.

A complete turn ends at once, its transcript already known, so ``stt`` does not run again.
With ``speculate`` (and a pipeline of harmless steps: :data:`HARMLESS`, no tools) a
turn judged not yet complete still starts its run at the pass, like LiveKit's
preemptive generation: its LLM and TTS work while the endpointer waits, and a
:class:`TurnGate` holds its events and its first audio until the turn is over. If the
user goes on speaking, the speculative run is cancelled (recorded as a cancelled run) and
counted as discarded; if the turn ends by silence with no voice since
the pass, the transcript is still right (only silence was added) and the gate opens.
Passes never queue: while one is still in its thread, no new one starts.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StepError
from ..logs import get_logger
from ..records import dataclass
from .frames import RATE, Float32, from_pcm
from .vad import Endpointer, TurnGate, Utterance, VadConfig

if TYPE_CHECKING:
    from ..contracts import Services
    from ..core.bound import Bound
    from ..core.run import EventSink
    from .frames import Audio
    from .stt import Transcript, Whisper

log = get_logger("harkd.voice")

#: Smart Turn v3's file in the pipecat-ai wheel, and the audio it reads
SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SECONDS = 8

#: last words after which a pause is mid-phrase ("turn on the", "remind me to"); not the
#: particles and pronouns that often end a command ("turn it on", "what time is it").
#: "too" is there as Whisper tiny.en's usual spelling of a trailing "to" ("remind me to"
#: → "Remind me too."); a command ending in "too" waits the full silence.
_CONNECTIVE_WORDS = """
    a an the and or but nor so because since than then if unless until when while
    to too of for with without from at by into onto my your our their its every each
    please um uh er
"""
CONNECTIVES = frozenset(_CONNECTIVE_WORDS.split())

#: words and numbers: "set the alarm for 7" ends in "7", not in "for"
_WORD = re.compile(r"[a-z0-9']+")
#: passes run here: two threads, so one listener's pass never waits on another's
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="harkd-turn")


def sounds_complete(text: str) -> bool:
    """Whether a transcript reads as a finished request: some words, and the last is not
    one that needs more after it (Whisper's own full stop is not trusted: it ends
    fragments with one too)."""
    words = _WORD.findall(text.lower())
    if not words:
        return False
    if text.rstrip().endswith((",", "-", "\u2014", "...", "\u2026")):
        return False
    return words[-1] not in CONNECTIVES


def smart_turn_path() -> str:
    """Where the installed ``pipecat-ai`` wheel keeps Smart Turn v3, found from its file
    list: pipecat itself is never imported."""
    from importlib import metadata

    try:
        files = metadata.files("pipecat-ai") or []
    except metadata.PackageNotFoundError as exc:
        raise StepError("end_of_turn smart-turn needs the voice extra: pip install "
                        "'harkd[voice]' (pipecat-ai, which ships the model, is missing)"
                        ) from exc
    for f in files:
        if f.name == SMART_TURN_FILE:
            return str(f.locate())
    raise StepError(f"the installed pipecat-ai has no {SMART_TURN_FILE}")


class SmartTurn:
    """Pipecat's Smart Turn v3 end-of-turn model: P(the turn is complete) of an utterance.

    ``probability`` is blocking (10-200 ms on one core): call it in a thread. Features are
    Whisper's 80-band log-mel of the last 8 s, zero-mean unit-variance normalised first,
    as the model was trained; faster-whisper's extractor computes the same values as
    Pipecat's (checked to 1e-6).
    """

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(path or smart_turn_path(), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=RATE,
                                          hop_length=160, chunk_length=SMART_TURN_SECONDS,
                                          n_fft=400)

    def probability(self, samples: Float32) -> float:
        import numpy as np

        n = SMART_TURN_SECONDS * RATE
        x = samples[-n:]
        x = np.pad(x, (n - x.size, 0)) if x.size < n else x
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        features = self._features(x.astype(np.float32), padding=0)[:, :n // 160]
        out = self._session.run(None, {"input_features": features[None].astype(np.float32)})
        return float(np.asarray(out[0]).reshape(-1)[0])


async def smart_turn(services: Services) -> SmartTurn:
    """The daemon's shared :class:`SmartTurn`."""
    from .models import shared

    return await shared(services, "voice.smart_turn", SmartTurn)


class TurnHost(Protocol):
    """What a :class:`TurnEnder` uses of its :class:`~harkd.voice.listen.Listener`."""

    bound: Bound
    endpointer: Endpointer
    emit: EventSink | None

    async def start_turn(self, utt: Utterance) -> asyncio.Task[Any]: ...

    def queue_turn(self, utt: Utterance) -> None: ...


class Transcriber(Protocol):
    """The ``stt`` step, whose options the pass transcribes with."""

    async def whisper(self, services: Services) -> Whisper: ...

    def transcribe_with(self, model: Whisper, audio: Audio) -> Transcript: ...


@dataclass
class Stats:
    """What the end-of-turn passes did, for ``bench/`` and the logs."""

    passes: int = 0
    early: int = 0
    speculative: int = 0
    discarded: int = 0
    used: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Pass:
    """The pass of one pause: its task, and the speculative run it started."""

    task: asyncio.Task[None] | None = None
    run: asyncio.Task[Any] | None = None
    gate: TurnGate | None = None
    text: str | None = None
    stt_ms: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class TurnEnder:
    """Runs the end-of-turn pass at each pause of a :class:`~harkd.voice.listen.Listener`'s
    turn, ends complete turns early and speculates; see the module docstring.

    The listener calls :meth:`frame` after each endpointer push with what the push
    returned; it returns the utterance to queue as a new turn, or None.
    """

    def __init__(self, listener: TurnHost, config: VadConfig, mode: str) -> None:
        self.listener = listener
        self.config = config
        self.stats = Stats()
        self.stt = _stt_step(listener) if mode == "always" else None
        self.model = config.end_of_turn
        self.speculate = config.speculate and _harmless(listener)
        # end_of_turn off without speculation is the plain fixed silence: no passes
        self.enabled = mode != "push_to_talk" and (self.model != "off" or self.speculate) \
            and (self.model == "smart-turn" or self.stt is not None)
        self._min = VadConfig.frames(self.config.min_silence)
        self._pass: _Pass | None = None
        self._jobs: list[Future[Any]] = []
        if self.enabled and self.model == "smart-turn":
            listener.bound.services.spawn(smart_turn(listener.bound.services))

    def frame(self, utt: Utterance | None) -> Utterance | None:
        ep = self.listener.endpointer
        current = self._pass
        if utt is not None:
            self._pass = None
            if current is not None and current.gate is not None and current.run is not None \
                    and not current.run.done():
                # No voice since the pass: its transcript (and reply) still stands.
                current.gate.open(utt.trace)
                self.stats.used += 1
                log.info("voice_speculation_used", pipeline=self.listener.bound.name,
                         rule=utt.trace.rule)
                return None
            if current is not None:
                self._cancel(current, "ended")
                if current.text:  # only silence was added since the pass: its text stands
                    return Utterance(utt.audio, utt.trace, current.text, current.stt_ms)
            return utt
        if not self.enabled:
            return None
        if current is not None and ep.pause == 0:
            self._pass = None
            self._cancel(current, "resumed")
        elif current is None and ep.pause >= self._min and not self._busy():
            snapshot = ep.peek("complete")
            if snapshot is not None:
                self._pass = _Pass()
                self._pass.task = asyncio.create_task(self._check(self._pass, snapshot))
        return None

    def _busy(self) -> bool:
        self._jobs = [job for job in self._jobs if not job.done()]
        return bool(self._jobs)

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        job = _POOL.submit(fn, *args)
        self._jobs.append(job)
        return asyncio.wrap_future(job)

    def _cancel(self, p: _Pass, reason: str) -> None:
        if p.task is not None:
            p.task.cancel()
        if p.run is not None and not (p.gate is not None and p.gate.is_open):
            p.run.cancel()
            if p.gate is not None:
                p.gate.close()
            self.stats.discarded += 1
            log.info("voice_speculation_discarded", pipeline=self.listener.bound.name,
                     reason=reason, **p.notes)

    async def _check(self, p: _Pass, snap: Utterance) -> None:
        try:
            await self._decide(p, snap)
        except (StepError, OSError, RuntimeError) as exc:
            log.warning("voice_turn_pass_failed", error=f"{type(exc).__name__}: {exc}")

    async def _decide(self, p: _Pass, snap: Utterance) -> None:
        listener = self.listener
        self.stats.passes += 1
        text: str | None = None
        stt_ms: float | None = None
        # The audio model runs beside Whisper (one thread against CTranslate2's several).
        judged: asyncio.Future[Any] | None = None
        if self.model == "smart-turn":
            turn_model = await smart_turn(listener.bound.services)
            judged = self._submit(turn_model.probability, from_pcm(snap.audio.pcm))
        if self.stt is not None:
            model = await self.stt.whisper(listener.bound.services)
            heard = await self._submit(self.stt.transcribe_with, model, snap.audio)
            text, stt_ms = heard.text, round(heard.elapsed * 1000, 1)
            p.text, p.stt_ms = text, stt_ms
            p.notes["text"] = text
            if not text:
                return  # nothing heard: the silence rule ends it, and stt says so
        complete = False
        if self.model == "heuristic":
            complete = text is not None and sounds_complete(text)
        elif judged is not None:
            prob = await judged
            p.notes["smart_turn"] = round(prob, 3)
            complete = prob >= self.config.threshold and (text is None
                                                          or sounds_complete(text))
        log.debug("voice_turn_pass", complete=complete, stt_ms=stt_ms, **p.notes)
        if self._pass is not p:
            return  # voice since, or the silence ended the turn meanwhile
        if complete:
            # The turn ends here: its run starts now, as any turn's, with this transcript.
            utt = listener.endpointer.end("complete")
            self._pass = None
            if utt is not None:
                self.stats.early += 1
                listener.queue_turn(Utterance(utt.audio, utt.trace, text, stt_ms))
            return
        if text and self.speculate:
            # Not over yet by the look of it: start the reply anyway, held by a gate,
            # in case only silence follows (then the silence rule opens the gate).
            p.gate = TurnGate(listener.emit, snap.trace)
            p.run = await listener.start_turn(
                Utterance(snap.audio, snap.trace, text, stt_ms, p.gate))
            self.stats.speculative += 1
            log.debug("voice_speculation_started", pipeline=listener.bound.name,
                      text=text, stt_ms=stt_ms)


#: steps a speculative run may take before its turn is known to be over: they change
#: nothing outside the run (an ``llm`` with a ``session`` saves it only once the gate opens)
HARMLESS = frozenset({"stt", "llm", "template", "tts", "play", "set", "log"})


def _harmless(listener: TurnHost) -> bool:
    """Whether the pipeline may run speculatively: only :data:`HARMLESS` steps, and no
    ``llm`` with tools (a tool call could switch on the lights for half a sentence)."""
    for entry in listener.bound.pipeline.steps:
        if entry.kind not in HARMLESS or bool(getattr(entry.step, "tools", None)):
            log.info("voice_no_speculation", pipeline=listener.bound.name, step=entry.kind)
            return False
    return True


def _stt_step(listener: TurnHost) -> Transcriber | None:
    """The pipeline's first step when it is ``stt`` (its options are the pass's)."""
    steps = listener.bound.pipeline.steps
    if not steps or steps[0].kind != "stt" or not hasattr(steps[0].step, "transcribe_with"):
        return None
    step: Transcriber = steps[0].step  # type: ignore[assignment]
    return step
