"""The wake word with a trained model: microWakeWord, streamed frame by frame.

``pymicro-wakeword`` ships its TensorFlow Lite runtime and four models in its wheel
(``okay_nabu``, ``hey_jarvis``, ``hey_mycroft``, ``alexa``), so this engine works offline
with nothing downloaded. Unlike the Whisper engine it listens to every frame, not to
finished turns: a 30 ms feature window goes through a small streaming network, and a turn
is for the assistant when the model fired during it. Whisper then runs only on those turns,
not on every conversation in the room.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .wake import WakeConfig

#: the models in pymicro-wakeword's wheel (also listed by the trigger schema)
BUILTIN = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")


def model_file(config: WakeConfig) -> Path:
    """The JSON description of the model ``config`` names: a built-in name, a built-in
    phrase ("hey jarvis"), or the path of a model's ``.json``."""
    import pymicro_wakeword

    name = config.model or "_".join(config.phrase.lower().replace(",", " ").split())
    if name in BUILTIN:
        return Path(pymicro_wakeword.__file__).parent / "models" / f"{name}.json"
    path = Path(name).expanduser()
    if path.suffix == ".json" and path.is_file():
        return path
    raise ValueError(f"no microWakeWord model {name!r}: use one of {', '.join(BUILTIN)} "
                     "or the path of a model's .json")


def phrase_of(config: WakeConfig) -> str:
    """The phrase the model was trained on, as its JSON spells it ("Okay Nabu")."""
    data: dict[str, Any] = json.loads(model_file(config).read_text())
    return str(data["wake_word"])


class MicroWake:
    """Feeds 20 ms frames to one microWakeWord model; ``push`` says when it fires.

    ``sensitivity`` moves the model's own probability cutoff: 0.5 keeps it, 1 lowers it
    by 0.25 (fewer misses, more false accepts), 0 raises it towards 1.
    """

    def __init__(self, config: WakeConfig) -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

        self._model = MicroWakeWord.from_config(model_file(config))
        self._features = MicroWakeWordFeatures()
        cutoff = self._model.probability_cutoff - (config.sensitivity - 0.5) * 0.5
        self.cutoff = min(0.99, max(0.05, cutoff))
        self.phrase = str(self._model.wake_word)

    def push(self, frame: bytes) -> float | None:
        """Take one frame of the internal format; the probability if the model fired."""
        fired: float | None = None
        for features in self._features.process_streaming(frame):
            p = self._model.process_streaming_prob(features)
            if p is not None and p > self.cutoff:
                fired = max(fired or 0.0, p)
        return fired
