"""Endpointing: where an utterance starts and ends, with webrtcvad, and why.

:class:`Endpointer` takes 20 ms frames and gives back an :class:`Utterance` when a turn
ends. It keeps ``pre_roll`` of audio from before the speech onset so first syllables are
not cut, starts a turn once ``min_speech`` of the recent frames are voiced, and ends it
after ``silence`` without voice, at ``max_utterance``, or when the client says stop. An
end-of-turn check (:mod:`.turn`) may end it sooner, at a pause of ``min_silence``, with
:meth:`Endpointer.end`. Each turn carries a :class:`TurnTrace` that the run log shows, so a
user can see why the assistant cut them off or kept waiting.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from ..records import dataclass
from .frames import FRAME_BYTES, FRAME_MS, RATE, Audio, rms

if TYPE_CHECKING:
    from ..core.run import EventSink

EndRule = Literal["silence", "complete", "max_utterance", "stop", "end_of_stream"]
#: how the end of a turn is judged at a pause: an audio model with a transcript check, the
#: transcript check alone, or only the ``silence`` rule
EndOfTurn = Literal["smart-turn", "heuristic", "off"]


@dataclass(frozen=True)
class VadConfig:
    """Endpointing options (the ``vad:`` mapping of the mic trigger and of audio mode)."""

    aggressiveness: int = 2
    min_speech: float = 0.2
    silence: float = 1.0
    max_utterance: float = 15.0
    pre_roll: float = 0.3
    end_of_turn: EndOfTurn = "smart-turn"
    min_silence: float = 0.2
    threshold: float = 0.5
    speculate: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("vad aggressiveness must be 0, 1, 2 or 3")
        if min(self.silence, self.min_speech, self.min_silence) < FRAME_MS / 1000:
            raise ValueError("vad silence, min_silence and min_speech must be at least 20ms")

    @staticmethod
    def frames(seconds: float) -> int:
        return max(1, round(seconds * 1000 / FRAME_MS))


@dataclass(frozen=True)
class TurnTrace:
    """How one turn was cut, in seconds of stream time (0 = first frame heard).

    ``waited`` is the time lost between the last voiced frame and the end decision: the
    ``silence`` setting, plus anything VAD took for voice. ``ended_wall`` is the wall
    clock at the decision, for latency measurements.
    """

    speech_start: float
    speech_end: float
    ended: float
    rule: EndRule
    duration: float
    waited: float
    voiced: float
    pre_roll: float
    ended_wall: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class TurnGate:
    """Holds a speculative run's events and first audio until its turn is over.

    ``trace`` is the run's live turn trace: the one at the pass until :meth:`open` puts
    the final one in place (the run log and metrics read it when the run ends).
    """

    def __init__(self, sink: EventSink | None, trace: TurnTrace) -> None:
        self.sink = sink
        self.trace: dict[str, Any] = trace.as_dict()
        self._open = asyncio.Event()
        self._held: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Future[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        """Until the gate opens and the events it held are sent (so a client hears the
        transcript and deltas before the audio, as without speculation)."""
        await self._open.wait()
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})

    def open(self, trace: TurnTrace) -> None:
        self.trace.clear()
        self.trace.update(trace.as_dict())
        self._open.set()

    def close(self) -> None:
        """The run was discarded: drop what was held."""
        if self._flusher is not None:
            self._flusher.cancel()
        self._held.clear()

    async def emit(self, event: dict[str, Any]) -> None:
        """The run's event sink: held while the gate is shut, in order after."""
        async with self._lock:
            if not self._open.is_set():
                self._held.append(event)
                if len(self._held) == 1:
                    self._flusher = asyncio.ensure_future(self._flush())
                return
            if self.sink is not None:
                await self.sink(event)

    async def _flush(self) -> None:
        await self._open.wait()
        async with self._lock:
            held, self._held = self._held, []
            for event in held:
                if self.sink is not None:
                    await self.sink(event)


@dataclass(frozen=True)
class Utterance:
    """One turn of speech in the internal format, with its trace and, when the wake word
    detector or an end-of-turn pass already transcribed it, its ``text`` (so ``stt`` need
    not run twice; ``stt_ms`` is what that pass took). A speculative turn carries the
    ``gate`` that holds its reply until the turn is known to be over."""

    audio: Audio
    trace: TurnTrace
    text: str | None = None
    stt_ms: float | None = None
    gate: TurnGate | None = None

    @property
    def seconds(self) -> float:
        return self.audio.seconds

    def as_value(self) -> dict[str, Any]:
        value = {**self.audio.as_value(), "turn": self.trace.as_dict()}
        if self.text is not None:
            value["text"] = self.text
        return value

    def __repr__(self) -> str:
        return f"<utterance {self.seconds:.2f}s ended by {self.trace.rule}>"


class Endpointer:
    """Turns a stream of 20 ms frames into utterances.

    ``push`` returns an :class:`Utterance` when one ends; ``just_started`` tells whether
    the last pushed frame began a turn (barge-in listens for that). A frame quieter than
    ``floor`` (RMS, 0..1) never counts as voice: while the assistant speaks, the caller
    raises the floor above the level of its own playback.
    """

    def __init__(self, config: VadConfig, *, auto_start: bool = True) -> None:
        import webrtcvad

        self.config = config
        self.auto_start = auto_start
        self._held = False
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._start_n = VadConfig.frames(config.min_speech)
        self._silence_n = VadConfig.frames(config.silence)
        self._max_n = VadConfig.frames(config.max_utterance)
        self._pre = collections.deque[tuple[bytes, bool]](
            maxlen=max(self._start_n, VadConfig.frames(config.pre_roll) + self._start_n))
        self._turn: list[bytes] = []
        self._n = 0
        self._start_frame = 0
        self._last_voiced = 0
        self._voiced = 0
        self._unvoiced_run = 0
        self._pre_frames = 0
        self.just_started = False

    @property
    def in_speech(self) -> bool:
        return bool(self._turn)

    @property
    def pause(self) -> int:
        """Frames without voice since the last voiced one in the current turn (0 outside
        a turn, and while a push-to-talk turn is held)."""
        return 0 if not self._turn or self._held else self._unvoiced_run

    def is_speech(self, frame: bytes, floor: float = 0.0) -> bool:
        if len(frame) != FRAME_BYTES:
            return False
        if floor > 0.0 and rms(frame) < floor:
            return False
        return bool(self._vad.is_speech(frame, RATE))

    def push(self, frame: bytes, floor: float = 0.0) -> Utterance | None:
        self.just_started = False
        voiced = self.is_speech(frame, floor)
        self._n += 1
        if not self._turn:
            self._pre.append((frame, voiced))
            if not self.auto_start:
                return None
            recent = list(self._pre)[-self._start_n:]
            if len(recent) == self._start_n and sum(v for _, v in recent) >= 0.8 * self._start_n:
                self._begin()
            return None
        self._turn.append(frame)
        if voiced:
            self._voiced += 1
            self._last_voiced = self._n
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1
        if self._unvoiced_run >= self._silence_n and not self._held:
            return self._finish("silence")
        if len(self._turn) >= self._max_n:
            return self._finish("max_utterance")
        return None

    def hold(self) -> None:
        """Start a turn now (with the pre-roll) and keep it open until :meth:`stop`:
        push-to-talk."""
        self._held = True
        if self._turn:
            return
        frames = list(self._pre)
        pre_n = VadConfig.frames(self.config.pre_roll)
        self._turn = [f for f, _ in frames[-pre_n:]] or [b"\0" * FRAME_BYTES]
        self._pre_frames = len(self._turn)
        self._start_frame = self._n + 1
        self._voiced = 0
        self._last_voiced = self._n
        self._unvoiced_run = 0
        self._pre.clear()
        self.just_started = True

    def stop(self, rule: EndRule = "stop") -> Utterance | None:
        """End the current turn now (the client said stop, the stream ended)."""
        self._held = False
        if not self._turn:
            # A short reply ("yes") may end before VAD started a turn: keep what was voiced.
            if not any(v for _, v in self._pre):
                self._pre.clear()
                return None
            self._begin()
        return self._finish(rule)

    def end(self, rule: EndRule = "complete") -> Utterance | None:
        """End the current turn now, at a pause an end-of-turn check found complete."""
        return self._finish(rule) if self._turn else None

    def peek(self, rule: EndRule = "complete") -> Utterance | None:
        """The current turn as it would end now, without ending it (a speculative pass
        transcribes this while the endpointer waits on)."""
        return self._utterance(rule) if self._turn else None

    def _begin(self) -> None:
        frames = list(self._pre)
        pre_n = VadConfig.frames(self.config.pre_roll)
        first_voiced = next(i for i, (_, v) in enumerate(frames) if v)
        keep_from = max(0, first_voiced - pre_n)
        self._turn = [f for f, _ in frames[keep_from:]]
        self._pre_frames = first_voiced - keep_from
        self._start_frame = self._n - len(frames) + first_voiced + 1
        self._voiced = sum(v for _, v in frames)
        self._last_voiced = self._n
        self._unvoiced_run = 0
        self._pre.clear()
        self.just_started = True

    def _finish(self, rule: EndRule) -> Utterance:
        utt = self._utterance(rule)
        self._turn = []
        self._unvoiced_run = 0
        return utt

    def _utterance(self, rule: EndRule) -> Utterance:
        sec = FRAME_MS / 1000
        end_n = self._n
        start = (self._start_frame - 1) * sec
        speech_end = self._last_voiced * sec
        trace = TurnTrace(
            speech_start=start,
            speech_end=speech_end,
            ended=end_n * sec,
            rule=rule,
            duration=len(self._turn) * sec,
            waited=(end_n - self._last_voiced) * sec,
            voiced=self._voiced * sec,
            pre_roll=self._pre_frames * sec,
            ended_wall=time.time(),
        )
        # Trailing silence carries nothing for Whisper; keep a little so words are not cut.
        tail = max(0, self._unvoiced_run - VadConfig.frames(0.2))
        frames = self._turn[: len(self._turn) - tail] if tail else self._turn
        return Utterance(Audio(b"".join(frames)), trace)
