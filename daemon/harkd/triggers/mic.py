"""The ``mic`` trigger: the microphone of the machine harkd runs on.

Each turn of speech (cut by VAD, optionally after a wake word, or held by push-to-talk)
starts a run whose input is the utterance audio. The capture, endpointing and recovery
live in :mod:`harkd.voice.mic`, imported only when the trigger is bound, so validating a
mic pipeline never imports sounddevice or numpy.

The trigger also answers ``POST /mic/<name>`` with ``?action=press|release|interrupt``
(push-to-talk buttons, or stopping the reply from a phone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.registry import TriggerKind
from ..records import dataclass
from .http import error_response

if TYPE_CHECKING:
    from aiohttp import web

    from ..core.bound import Bound
    from ..core.pipeline import Build
    from ..voice.listen import Listener

DURATION: dict[str, Any] = {"type": ["string", "number"],
                            "description": "Seconds, or a duration like 600ms or 2s."}

VAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Endpointing: when a turn of speech starts and ends.",
    "properties": {
        "aggressiveness": {"type": "integer", "minimum": 0, "maximum": 3, "default": 2,
                           "description": "webrtcvad filter: 0 hears most as speech, 3 "
                                          "rejects most noise."},
        "min_speech": {**DURATION, "default": "200ms",
                       "description": "Voice needed before a turn starts."},
        "silence": {**DURATION, "default": "1s",
                    "description": "Silence that always ends a turn (the only rule with "
                                   "end_of_turn: off)."},
        "end_of_turn": {"enum": ["smart-turn", "heuristic", "off", False],
                        "default": "smart-turn",
                        "description": "At a pause of min_silence, whether the turn "
                                       "sounds complete (then it ends at once): "
                                       "smart-turn: Pipecat's Smart Turn v3 audio model, "
                                       "vetoed when the transcript ends in a word like "
                                       "'the', 'and', 'to'; heuristic: that transcript "
                                       "check alone; off (or false): only silence "
                                       "ends a turn."},
        "min_silence": {**DURATION, "default": "200ms",
                        "description": "The pause at which the turn is transcribed and "
                                       "judged."},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                      "description": "smart-turn: the probability of a finished turn "
                                     "needed to end it early."},
        "speculate": {"type": "boolean", "default": True,
                      "description": "Start the run (LLM, TTS) on the transcript at the "
                                     "pause, its reply held until the turn is over; "
                                     "discarded if the user goes on."},
        "max_utterance": {**DURATION, "default": "15s",
                          "description": "A turn is cut at this length."},
        "pre_roll": {**DURATION, "default": "300ms",
                     "description": "Audio kept from before the onset."},
    },
}

BARGE_IN_SCHEMA: dict[str, Any] = {
    "description": "Whether speaking over a reply stops it (true), and how loud it must be.",
    "anyOf": [
        {"type": "boolean"},
        {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean", "default": True},
            "ratio": {"type": "number", "minimum": 1, "default": 2.0,
                      "description": "Voice must be this many times louder (RMS) than "
                                     "the reply playing, so the assistant does not "
                                     "interrupt itself."},
            "min_level": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01,
                          "description": "Voice below this RMS never interrupts."},
            "echo": {"enum": ["reference", "level"], "default": "reference",
                     "description": "reference: take what the reply played out of what "
                                    "the mic hears (echo cancellation), so the reply "
                                    "never interrupts itself; level: only voice ratio "
                                    "times louder than the reply counts."},
        }},
    ],
}

CLEAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Clean the incoming audio before VAD, wake word and STT (WebRTC's "
                   "noise suppression and automatic gain).",
    "properties": {
        "noise_suppression": {"type": "integer", "minimum": 0, "maximum": 4, "default": 0,
                              "description": "0 off, 1 to 4 stronger."},
        "auto_gain": {"type": "integer", "minimum": 0, "maximum": 31, "default": 0,
                      "description": "Target level in dB below full scale (3 is loud); "
                                     "0 off."},
    },
}

#: microWakeWord models in pymicro-wakeword's wheel (harkd.voice.microwake.BUILTIN)
WAKE_MODELS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")

WAKE_SCHEMA: dict[str, Any] = {
    "description": "A wake phrase, or its options. With one, mode defaults to wake.",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "object", "additionalProperties": False, "properties": {
            "engine": {"enum": ["whisper", "microwakeword"], "default": "whisper",
                       "description": "whisper: Whisper transcribes each turn and its "
                                      "start is matched against the phrase (any phrase); "
                                      "microwakeword: a trained model listens to every "
                                      "frame (okay nabu, hey jarvis, hey mycroft, alexa)."},
            "model": {"type": "string", "minLength": 1,
                      "description": "microwakeword: okay_nabu, hey_jarvis, hey_mycroft, "
                                     "alexa, or the path of a model's .json. Default: "
                                     "from the phrase, else okay_nabu."},
            "phrase": {"type": "string", "minLength": 1, "default": "hey hark"},
            "sensitivity": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                            "description": "Higher wakes on looser matches (fewer misses, "
                                           "more false accepts)."},
            "refractory": {**DURATION, "default": "2s",
                           "description": "Wake matches this soon after one are ignored."},
            "follow_up": {**DURATION, "default": "8s",
                          "description": "After a wake or a reply, turns within this "
                                         "time need no wake phrase."},
        }},
    ],
}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "device": {"type": ["string", "integer"], "default": "default",
                   "description": "Input device name or index ('python -m sounddevice')."},
        "mode": {"enum": ["wake", "always", "push_to_talk"],
                 "description": "wake: turns must start with the wake phrase; always: "
                                "every turn; push_to_talk: POST /mic/<name>?action=press, "
                                "then release. Default: wake if wake is set, else always."},
        "wake": WAKE_SCHEMA,
        "vad": VAD_SCHEMA,
        "barge_in": BARGE_IN_SCHEMA,
        "clean": CLEAN_SCHEMA,
        "preload": {"type": "boolean", "default": True,
                    "description": "Load Whisper when the pipeline binds."},
    },
}


@dataclass(frozen=True, eq=False)
class MicTrigger:
    """A compiled mic trigger: its validated options; the live listeners by pipeline."""

    params: dict[str, Any]
    path: str
    live: dict[str, Listener] = field(default_factory=dict, compare=False)
    kind: str = "mic"

    @property
    def routes(self) -> tuple[str, ...]:
        return (self.path,)

    def describe(self) -> dict[str, Any]:
        wake = self.params.get("wake")
        return {"kind": "mic", "device": self.params.get("device", "default"),
                "mode": self.params.get("mode") or ("wake" if wake else "always"),
                "wake": wake if isinstance(wake, str) else (wake or {}).get("phrase"),
                "path": self.path}

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        from ..voice.mic import listen_mic

        await listen_mic(bound, self.params, started, self.live)

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse:
        from aiohttp import web

        if request.method != "POST":
            return error_response(405, "use POST with ?action=press, release or interrupt")
        listener = self.live.get(bound.name)
        if listener is None:
            return error_response(503, "the microphone is not open")
        action = request.query.get("action", "")
        if action == "press":
            listener.press()
        elif action == "release":
            listener.stop()
        elif action == "interrupt":
            listener.interrupt("api")
        else:
            return error_response(400, "action must be press, release or interrupt")
        return web.json_response({"ok": True, "action": action})


def check_wake(params: dict[str, Any], b: Build) -> None:
    """A microwakeword wake needs a model that exists: a built-in one (named, or by its
    phrase) or a model's .json."""
    wake = params.get("wake")
    if not isinstance(wake, dict) or wake.get("engine") != "microwakeword":
        return
    if "model" in wake:
        name, key = wake["model"], "model"
    elif "phrase" in wake:
        name, key = "_".join(wake["phrase"].lower().replace(",", " ").split()), "phrase"
    else:
        return
    if name not in WAKE_MODELS and not (name.endswith(".json")
                                        and Path(name).expanduser().is_file()):
        b.child(b.pointer + "/wake").error(
            key, f"no microWakeWord model {name!r}: use one of {', '.join(WAKE_MODELS)} "
                 "or the path of a model's .json")


def check_listening(params: dict[str, Any], b: Build) -> None:
    """What the schema cannot check of a listening trigger (``mic``, ``satellite``): the
    ``vad`` durations, that ``mode: wake`` has a wake phrase, and the wake model."""
    for key in ("silence", "min_silence", "min_speech", "max_utterance", "pre_roll"):
        if key in (params.get("vad") or {}):
            b.child(b.pointer + "/vad").seconds(key, params["vad"][key])
    if params.get("mode") == "wake" and not params.get("wake"):
        b.error("mode", "mode wake needs a wake phrase (wake: hey hark)")
    check_wake(params, b)


def build(params: dict[str, Any], b: Build) -> MicTrigger:
    check_listening(params, b)
    return MicTrigger(params=params, path=f"/mic/{b.name}")


MIC = TriggerKind("mic", "The machine's microphone: each turn of speech starts a run.",
                  PARAMS, build)
