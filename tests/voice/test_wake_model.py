"""The trained wake-word engine (``wake: {engine: microwakeword}``) through the real mic
path: speech played into a PulseAudio null sink is heard from its monitor; a turn starts a
run only when the model heard its wake word in it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harkd.check import check
from harkd.testing import run_daemon, wait_until
from harkd.voice.frames import read_wav
from harkd.voice.microwake import BUILTIN, MicroWake
from harkd.voice.wake import WakeConfig

from .conftest import Models, Pulse, Speak
from .test_mic import finished, listener, run_detail, runs

WAKE = """\
trigger:
  mic:
    device: pulse
    vad: {silence: 500ms}
    wake: {engine: microwakeword, phrase: okay nabu, follow_up: 0s}
steps:
  - stt: {}
  - template: "You said {{ input }}"
"""


@pytest.mark.anyio
@pytest.mark.audio
async def test_the_wake_word_starts_a_turn_and_other_speech_does_not(
        tmp_path: Path, models: Models, speak: Speak, pulse: Pulse) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("nabu", WAKE)
        await wait_until(lambda: d.state("nabu") == "active")
        await wait_until(lambda: "nabu" in d.daemon.catalog.entries["nabu"].bound
                         .pipeline.trigger.live, timeout=30)
        await asyncio.to_thread(pulse.play(speak("turn on the kitchen lights")).wait)
        await asyncio.to_thread(pulse.play(speak("okay nabu, what time is it")).wait)
        await wait_until(lambda: finished(d, 1), timeout=60)
        await asyncio.sleep(1.0)  # a run for the first utterance would have started by now
        done = await runs(d)
        assert len(done) == 1, done
        run = await run_detail(d, done[0]["id"])
        assert run["status"] == "ok", run
        said = str(run["output"]).lower()
        assert "time is it" in said and "kitchen" not in said, said
        assert "nabu" not in said, said  # the wake word was taken off the transcript
        fired = listener(d, "nabu").fired
        assert len(fired) >= 1 and all(p > 0.5 for _, p in fired)


@pytest.mark.parametrize("model", BUILTIN)
def test_each_model_in_the_wheel_hears_its_phrase_and_not_other_speech(
        model: str, speak: Speak) -> None:
    phrase = model.replace("_", " ")
    engine = "espeak" if model != "hey_jarvis" else "piper"  # jarvis misses espeak's voice

    def fires(text: str) -> bool:
        detector = MicroWake(WakeConfig(phrase=phrase, engine="microwakeword"))
        pcm = read_wav(speak(text, engine=engine)).pcm
        return any(detector.push(pcm[i:i + 640]) is not None
                   for i in range(0, len(pcm) - 639, 640))

    assert fires(f"{phrase}, turn on the lights")
    assert not fires("turn on the lights and play some music")


def test_check_rejects_a_wake_model_that_does_not_exist(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trigger:\n  mic: {wake: {engine: microwakeword, phrase: hey hark}}\n"
                   "steps:\n  - stt: {}\n")
    good = tmp_path / "good.yaml"
    good.write_text("trigger:\n  mic: {wake: {engine: microwakeword, model: alexa}}\n"
                    "steps:\n  - stt: {}\n")
    ws = tmp_path / "ws.yaml"
    ws.write_text("trigger:\n  websocket:\n    mode: audio\n"
                  "    audio: {wake: {engine: microwakeword, model: hey_siri}}\n"
                  "steps:\n  - stt: {}\n")
    report = check([bad, good, ws])
    assert len(report.errors) == 2, report.errors
    first, second = sorted(report.errors, key=lambda e: str(e.position))
    assert "hey_hark" in str(first) and "okay_nabu" in str(first)
    assert "bad.yaml" in str(first.position)
    assert "hey_siri" in str(second) and "ws.yaml" in str(second.position)
