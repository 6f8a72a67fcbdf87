"""Voice: audio frames, endpointing, wake word, speech models, playback and WebSocket audio.

Everything under this package may import numpy, webrtcvad, sounddevice, faster-whisper and
piper; it is imported only when a loaded pipeline uses a voice trigger or step, so
``harkd check`` and plain webhook daemons never pay for it. The step and trigger kinds live
in :mod:`harkd.steps.voice` and :mod:`harkd.triggers.mic`, which stay cheap to import.
"""

#: ``Run.extra`` key of the :class:`~harkd.voice.playback.AudioOut` a run's ``play`` uses
#: (set by the WebSocket audio mode; without it ``play`` opens its output device)
AUDIO_OUT = "voice.audio_out"
#: ``Run.extra`` key of the :class:`~harkd.voice.playback.Speaking` of the listener that
#: started the run (it interrupts playback on barge-in)
SPEAKING = "voice.speaking"
#: ``Run.extra`` key of the :class:`~harkd.voice.turn.TurnGate` of a speculative run: its
#: reply waits there until the turn is known to be over
TURN_GATE = "voice.turn_gate"
