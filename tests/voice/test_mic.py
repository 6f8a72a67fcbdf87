"""The mic trigger through a real PulseAudio null sink: speech played into the sink is
captured from its monitor, and the pipeline's reply is played back into the same sink (so
the assistant hears itself, as through a real speaker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import run_daemon, spawn_daemon, wait_until

from .conftest import Models, Pulse, Speak

pytestmark = [pytest.mark.anyio, pytest.mark.audio]

ASSISTANT = """\
trigger:
  mic: {device: pulse, vad: {silence: 500ms}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
  - tts: {}
  - play: {device: pulse}
"""

LONG = """\
trigger:
  mic: {device: pulse, vad: {silence: 400ms}, barge_in: {ratio: 2.0}}
steps:
  - stt: {}
  - template: >-
      {% if 'time' in input|lower %}Okay.{% else %}{% for i in range(15) %}This is
      sentence {{ i }} of a long answer. {% endfor %}{% endif %}
  - tts: {}
  # a speaker across the room reaches the mic much quieter than the user's voice
  - play: {device: pulse, volume: 0.15}
"""


async def runs(d: Any) -> list[dict[str, Any]]:
    async with d.http.get(d.url("/api/runs")) as resp:
        data = await resp.json()
    found: list[dict[str, Any]] = data["runs"] if isinstance(data, dict) else data
    return found


async def run_detail(d: Any, run_id: str) -> dict[str, Any]:
    async with d.http.get(d.url(f"/api/runs/{run_id}")) as resp:
        detail: dict[str, Any] = await resp.json()
        return detail


def listener(d: Any, name: str) -> Any:
    return d.daemon.catalog.entries[name].bound.pipeline.trigger.live[name]


async def test_mic_turn_is_transcribed_and_answered_aloud(
        tmp_path: Path, models: Models, speak: Speak, pulse: Pulse) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("assistant", ASSISTANT)
        await wait_until(lambda: d.state("assistant") == "active")
        rec = await pulse.record(tmp_path / "sink.wav")
        try:
            await asyncio.to_thread(pulse.play(speak("turn on the kitchen lights")).wait)
            await wait_until(lambda: finished(d, 1), timeout=60)
            await asyncio.sleep(1.5)  # let the reply's echo reach the mic, to see it ignored
        finally:
            sink = rec.stop()
        done = await runs(d)
        assert len(done) == 1, done  # the reply it heard through the sink started no run
        run = await run_detail(d, done[0]["id"])
        assert run["status"] == "ok", run
        assert "kitchen lights" in str(run["output"]).lower()
        stt = run["steps"][0]
        # ended by the end-of-turn check at a pause, or by the silence if it was slower
        assert stt["detail"]["turn"]["rule"] in ("complete", "silence")
        assert stt["detail"]["turn"]["pre_roll"] > 0
        play = run["steps"][-1]["detail"]
        assert play["seconds"] > 1.0 and play["interrupted"] is False
        heard = models.transcribe(sink).lower()
        assert "you said" in heard, heard


async def finished(d: Any, n: int) -> bool:
    return len([r for r in await runs(d) if r["status"] != "running"]) >= n


async def test_speaking_over_the_reply_interrupts_it(
        tmp_path: Path, models: Models, speak: Speak, pulse: Pulse) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("long", LONG)
        await wait_until(lambda: d.state("long") == "active")
        await asyncio.to_thread(pulse.play(speak("tell me a story")).wait)
        await wait_until(lambda: listener(d, "long").speaking.active, timeout=60)
        await asyncio.sleep(1.0)  # it has been speaking (and hearing itself) for a while
        # Piper's voice: Whisper hears it over the reply more reliably than espeak's
        await asyncio.to_thread(pulse.play(speak("what time is it", engine="piper")).wait)
        await wait_until(lambda: finished(d, 2), timeout=60)
        done = sorted(await runs(d), key=lambda r: r.get("started", 0))
        assert len(done) == 2, done
        first = await run_detail(d, done[0]["id"])
        second = await run_detail(d, done[1]["id"])
        play = first["steps"][-1]["detail"]
        assert play["interrupted"] is True and play["interrupt"] == "barge_in"
        assert "sentence 14" not in play["text"]
        assert "time is it" in second["steps"][0]["detail"]["text"].lower()
    assert second["output"] == "Okay."


class LogTail:
    """The JSON log lines a child harkd has written so far, read on from where the last
    read stopped (the PortAudio errors of a dead sound server can fill the file fast)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def seen(self, event: str, times: int = 1) -> bool:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
        return sum(e.get("event") == event for e in self.events) >= times


async def test_mic_is_released_on_remove_and_recovers_from_device_loss(
        tmp_path: Path, pulse: Pulse) -> None:
    # A child daemon: PortAudio cannot close a stream whose sound server died, and its
    # ALSA thread then spins printing errors. In the test process that would go on, and
    # take a core, for the rest of the session.
    with spawn_daemon(tmp_path, {"assistant": ASSISTANT}, env=pulse.env) as child:
        log = LogTail(child.log)
        await wait_until(lambda: log.seen("mic_opened"), 30)
        pulse.stop()
        await wait_until(lambda: log.seen("mic_device_lost"), 30)
        pulse.start()
        await wait_until(lambda: log.seen("mic_opened", 2), 60)
        (child.folder / "assistant.yaml").unlink()
        await wait_until(lambda: log.seen("mic_released"), 30)
    lost = next(e for e in log.events if e["event"] == "mic_device_lost")
    assert lost["retry_in"] > 0


EXIT_PROBE = """
import atexit, sys, threading, time
import sounddevice as sd
from harkd.voice import mic
terminate = sd._terminate
def probe():
    print("Pa_Terminate", flush=True)
    terminate()
sd._terminate = probe
if sys.argv[1] == "stuck":
    stuck = threading.Thread(target=time.sleep, args=(30,), daemon=True)
    stuck.start()
    mic._CLOSING.add(stuck)
atexit.register(mic._exit_guard)
"""


@pytest.mark.parametrize(("state", "terminates"), [("clean", True), ("stuck", False)])
def test_a_close_stuck_in_portaudio_does_not_hang_interpreter_exit(
        state: str, terminates: bool) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, state], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("Pa_Terminate" in proc.stdout) is terminates
