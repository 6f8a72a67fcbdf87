"""From frames to runs: endpointing, the wake word, barge-in and the runs they start.

A :class:`Listener` is fed 20 ms frames (by the mic trigger or an audio WebSocket) and
never blocks: ``feed`` runs VAD and returns, and finished turns are handled by its worker
task (the wake-word check needs Whisper, which runs in a thread). While a reply is being
spoken, what was played is taken out of each frame (:mod:`.echo`; or, with ``barge_in:
{echo: level}``, a frame counts as voice only if it is clearly louder than the playback),
so the assistant does not interrupt itself; a real onset interrupts the reply at once.
Frames may be cleaned (noise suppression, automatic gain) before VAD, and a trained
wake-word model (:mod:`.microwake`) may listen to every frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import HarkError
from ..logs import get_logger
from ..records import dataclass
from . import AUDIO_OUT, SPEAKING, TURN_GATE
from .clean import CleanConfig, Cleaner
from .echo import EchoGate
from .frames import FRAME_MS, from_pcm
from .playback import AudioOut, Speaking
from .turn import TurnEnder
from .vad import Endpointer, Utterance, VadConfig
from .wake import WakeConfig, WakeSpotter

if TYPE_CHECKING:
    from ..core.bound import Bound
    from ..core.run import EventSink, RunResult
    from .microwake import MicroWake

log = get_logger("harkd.voice")

Mode = Literal["wake", "always", "push_to_talk"]
EchoMode = Literal["reference", "level"]


@dataclass(frozen=True)
class BargeIn:
    """When the user may interrupt a reply: voice above ``min_level`` RMS for the VAD's
    ``min_speech`` once the reply's echo is taken out (``echo: reference``), or ``ratio``
    times louder than the playback level (``echo: level``)."""

    enabled: bool = True
    ratio: float = 2.0
    min_level: float = 0.01
    echo: EchoMode = "reference"


@dataclass(frozen=True)
class ListenConfig:
    """How a listener turns speech into runs (the mic trigger's and audio mode's options)."""

    mode: Mode = "always"
    vad: VadConfig = field(default_factory=VadConfig)
    wake: WakeConfig | None = None
    barge_in: BargeIn = field(default_factory=BargeIn)
    clean: CleanConfig = field(default_factory=CleanConfig)


class Listener:
    """Feeds frames through an :class:`Endpointer` and runs ``bound`` for each turn.

    ``trigger`` is the base of each run's trigger data; the turn trace is added to it.
    ``audio_out`` makes the AudioOut for a run's ``play`` (None: play uses its device).
    ``finished`` is awaited with each run's result (audio mode sends it to the client).
    """

    def __init__(
        self,
        bound: Bound,
        config: ListenConfig,
        trigger: dict[str, Any],
        *,
        emit: EventSink | None = None,
        audio_out: Callable[[], AudioOut] | None = None,
        finished: Callable[[RunResult], Any] | None = None,
    ) -> None:
        self.bound = bound
        self.config = config
        self.trigger = trigger
        self.emit = emit
        self.audio_out = audio_out
        self.finished = finished
        self.endpointer = Endpointer(config.vad, auto_start=config.mode != "push_to_talk")
        self.spotter = WakeSpotter(config.wake) if config.wake else None
        self.detector: MicroWake | None = None
        if config.wake is not None and config.wake.engine == "microwakeword" \
                and config.mode == "wake":
            from .microwake import MicroWake

            self.detector = MicroWake(config.wake)
        #: stream times and probabilities of the wake-word model's recent detections
        self.fired: deque[tuple[float, float]] = deque(maxlen=32)
        bi = config.barge_in
        self.echo = EchoGate(bi.echo, bi.ratio, bi.min_level)
        self.cleaner = Cleaner(config.clean) if config.clean.enabled else None
        self.speaking = Speaking(self.echo.reference)
        self.clock = 0.0
        self.awake_until = 0.0
        self.last_wake = -1e9
        self.runs: set[asyncio.Task[Any]] = set()
        self._current: asyncio.Task[Any] | None = None
        self._turns: asyncio.Queue[Utterance] = asyncio.Queue(maxsize=8)
        #: ends turns early at a pause that sounds complete, and speculates (:mod:`.turn`)
        self.ender = TurnEnder(self, config.vad, config.mode)

    # -- fed from the capture loop -------------------------------------------------------

    def feed(self, frame: bytes, at: float | None = None) -> None:
        """Take one 20 ms frame of the internal format, captured at ``at`` (monotonic
        seconds; None: now, for sources that do not say). Never blocks."""
        self.clock += FRAME_MS / 1000
        frame, floor = self.echo(frame, self.speaking, at)
        if self.cleaner is not None:
            frame = self.cleaner(frame)
        if self.detector is not None:
            p = self.detector.push(frame)
            if p is not None:
                self.fired.append((self.clock, p))
        utt = self.endpointer.push(frame, floor)
        if self.endpointer.just_started:
            self._onset()
        utt = self.ender.frame(utt)
        if utt is not None:
            self._queue(utt)

    def stop(self) -> None:
        """End the current turn now (the client sent stop, the button was released)."""
        utt = self.ender.frame(self.endpointer.stop("stop"))
        if utt is not None:
            self._queue(utt)

    def press(self) -> None:
        """Push-to-talk: start a turn now."""
        self.endpointer.hold()
        self._onset()

    def interrupt(self, reason: str = "interrupt") -> None:
        """Stop the reply being spoken (the client asked, or the user barged in)."""
        if self.speaking.active:
            self.speaking.interrupt(reason)
            log.info("voice_interrupt", reason=reason, at=round(self.clock, 2))
            if self.emit is not None and reason != "client":
                task = asyncio.ensure_future(self.emit({"type": "interrupt", "reason": reason}))
                self.runs.add(task)
                task.add_done_callback(self.runs.discard)

    def _onset(self) -> None:
        if self.speaking.active and self.config.barge_in.enabled:
            self.interrupt("barge_in")

    def queue_turn(self, utt: Utterance) -> None:
        """Hand a finished turn to the worker (which checks the wake word, then runs)."""
        self._queue(utt)

    def _queue(self, utt: Utterance) -> None:
        try:
            self._turns.put_nowait(utt)
        except asyncio.QueueFull:
            log.warning("voice_turn_dropped", reason="too many turns waiting")

    # -- the worker ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Handle finished turns until cancelled. Runs already started go on."""
        while True:
            utt = await self._turns.get()
            try:
                await self._turn(utt)
            except (HarkError, OSError) as exc:
                log.warning("voice_turn_failed", error=f"{type(exc).__name__}: {exc}")

    def cancel_runs(self) -> None:
        for task in list(self.runs):
            task.cancel()

    async def _turn(self, utt: Utterance) -> None:
        trace = utt.trace.as_dict()
        log.info("voice_turn", **trace)
        if self.detector is not None:
            utt = await self._wake_model(utt)  # type: ignore[assignment]
            if utt is None:
                return
        elif self.spotter is not None and self.config.mode == "wake":
            utt = await self._wake(utt)  # type: ignore[assignment]
            if utt is None:
                return
        await self._start(utt)

    async def _wake(self, utt: Utterance) -> Utterance | None:
        assert self.spotter is not None and self.config.wake is not None
        from .models import whisper

        awake = self.clock < self.awake_until
        model = await whisper(self.bound.services)
        heard = await asyncio.to_thread(model.transcribe, from_pcm(utt.audio.pcm),
                                        prompt=self.config.wake.phrase)
        match = self.spotter.match(heard.text)
        in_refractory = self.clock - self.last_wake < self.config.wake.refractory
        if match is not None and not in_refractory:
            self.last_wake = self.clock
            log.info("voice_wake", heard=match.heard, score=match.score, rest=match.rest)
            if self.emit is not None:
                await self.emit({"type": "wake", "heard": match.heard, "score": match.score})
            if not match.rest:
                self.awake_until = self.clock + self.config.wake.follow_up
                return None
            return Utterance(utt.audio, utt.trace, match.rest)
        if awake:
            return Utterance(utt.audio, utt.trace, heard.text)
        log.info("voice_not_for_me", heard=heard.text,
                 score=match.score if match else None, refractory=in_refractory)
        return None

    async def _wake_model(self, utt: Utterance) -> Utterance | None:
        """The wake-word model's check: it fired during the turn (or shortly before it
        started), outside the refractory time of the last wake. Only then, or when awake
        for a follow-up, is the turn transcribed (with the wake phrase taken off)."""
        assert self.spotter is not None and self.config.wake is not None
        from .models import whisper

        wake = self.config.wake
        awake = self.clock < self.awake_until
        start, end = utt.trace.speech_start - utt.trace.pre_roll - 0.5, utt.trace.ended
        fired = [(t, p) for t, p in self.fired
                 if start <= t <= end and t - self.last_wake >= wake.refractory]
        if not fired and not awake:
            log.info("voice_not_for_me", engine="microwakeword")
            return None
        model = await whisper(self.bound.services)
        heard = await asyncio.to_thread(model.transcribe, from_pcm(utt.audio.pcm),
                                        prompt=wake.phrase)
        if not fired:
            return Utterance(utt.audio, utt.trace, heard.text)
        self.last_wake = max(t for t, _ in fired)
        score = round(max(p for _, p in fired), 3)
        match = self.spotter.match(heard.text)
        rest = match.rest if match is not None else heard.text
        log.info("voice_wake", engine="microwakeword", heard=wake.phrase, score=score,
                 rest=rest)
        if self.emit is not None:
            await self.emit({"type": "wake", "heard": wake.phrase, "score": score})
        if not rest:
            self.awake_until = self.clock + wake.follow_up
            return None
        return Utterance(utt.audio, utt.trace, rest)

    async def start_turn(self, utt: Utterance) -> asyncio.Task[Any]:
        """Start the run of a turn now; a speculative one (``utt.gate``) sends its events
        and audio only once the gate opens. The run's task."""
        return await self._start(utt)

    async def _start(self, utt: Utterance) -> asyncio.Task[Any]:
        previous = self._current
        if previous is not None and not previous.done() and self.config.barge_in.enabled:
            previous.cancel()
        speaking = Speaking(self.echo.reference)
        self.speaking = speaking
        gate = utt.gate
        trigger = {**self.trigger, "turn": gate.trace if gate else utt.trace.as_dict()}
        run = self.bound.new_run(utt, trigger, gate.emit if gate else self.emit,
                                 streaming=True)
        run.extra[SPEAKING] = speaking
        if gate is not None:
            run.extra[TURN_GATE] = gate
        if self.audio_out is not None:
            run.extra[AUDIO_OUT] = self.audio_out()
        task = asyncio.create_task(self._run(run), name=f"voice-run:{run.id}")
        self.runs.add(task)
        task.add_done_callback(self.runs.discard)
        self._current = task
        return task

    async def _run(self, run: Any) -> None:
        result = await self.bound.run(run)
        gate = run.extra.get(TURN_GATE)
        if gate is not None:
            # A speculative run's result, too, waits for its turn to be over (and after the
            # events its gate held); if the user goes on, this task is cancelled here.
            await gate.wait()
        if self.config.wake is not None and result.ok:
            self.awake_until = self.clock + self.config.wake.follow_up
        if self.finished is not None:
            with contextlib.suppress(ConnectionError):
                await self.finished(result)
