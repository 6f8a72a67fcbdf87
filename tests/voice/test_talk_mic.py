"""`harkd talk --mic`: a real microphone (the PulseAudio null sink's monitor) streamed to a
real daemon's audio WebSocket, the transcript and reply printed by the command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from harkd.testing import run_daemon

from .conftest import Models, Pulse, Speak

pytestmark = pytest.mark.anyio

EARS = """\
trigger: {websocket: {mode: audio, audio: {vad: {silence: 500ms}}}}
steps:
  - stt: {}
  - template: "heard {{ input | lower }}"
"""


async def test_talk_mic_sends_speech_and_prints_the_reply(
        tmp_path: Path, models: Models, speak: Speak, pulse: Pulse) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("ears", EARS)
        env = {**pulse.env}
        env.pop("HARKD_CONFIG", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harkd", "talk", "ears", "--url", d.url("").rstrip("/"),
            "--mic", "--device", "pulse", "--turns", "1", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        assert proc.stderr is not None
        ready = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"listening on" in ready, ready
        await asyncio.to_thread(pulse.play(speak("turn on the kitchen lights")).wait)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:  # hung: end it here, not in the closed loop's GC
                proc.kill()
                await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "you: " in text and "kitchen" in text.lower()
    assert "harkd: heard " in text and "kitchen lights" in text
