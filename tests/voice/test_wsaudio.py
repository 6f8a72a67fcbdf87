"""WebSocket audio mode through a real daemon: PCM in at real-time pace, speech out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harkd.testing import run_daemon, wait_until
from harkd.voice.frames import Audio, read_wav

from .conftest import Models, Speak

pytestmark = pytest.mark.anyio

ECHO = """\
trigger: {websocket: {mode: audio, audio: {vad: {silence: 500ms}}}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
  - tts: {}
  - play: {}
"""

LONG = """\
trigger: {websocket: {mode: audio}}
steps:
  - stt: {}
  - template: >-
      {% for i in range(12) %}This is sentence number {{ i }} of a long
      reply. {% endfor %}
  - tts: {}
  - play: {}
"""


async def send_pcm(ws: aiohttp.ClientWebSocketResponse, audio: Audio, *,
                   block: float = 0.02) -> None:
    """Send ``audio`` in blocks at real-time pace, as a microphone would."""
    step = int(audio.rate * block) * 2
    for i in range(0, len(audio.pcm), step):
        await ws.send_bytes(audio.pcm[i:i + step])
        await asyncio.sleep(block)


async def receive(ws: aiohttp.ClientWebSocketResponse, log: list[Any],
                  until: str = "result") -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            log.append(msg.data)
        else:
            event = json.loads(msg.data)
            log.append(event)
            if event["type"] in (until, "error"):
                return


def events(log: list[Any]) -> list[dict[str, Any]]:
    return [e for e in log if isinstance(e, dict)]


async def test_audio_turn_gives_transcript_speech_and_result(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("echo", ECHO)
        wav = read_wav(speak("turn on the kitchen lights", rate=22050))
        async with d.http.ws_connect(d.ws_url("/ws/echo")) as ws:
            await ws.send_json({"type": "start", "sample_rate": 22050})
            log: list[Any] = []
            reader = asyncio.create_task(receive(ws, log))
            await send_pcm(ws, Audio(open_pcm(speak("turn on the kitchen lights",
                                                    rate=22050)), 22050))
            await asyncio.wait_for(reader, 60)
        kinds = [e["type"] for e in events(log)]
        assert kinds == ["transcript", "audio", "audio_end", "result"], kinds
        transcript = events(log)[0]["text"].lower()
        assert "kitchen lights" in transcript
        header = events(log)[1]
        assert header["format"] == "s16le" and header["sample_rate"] == 22050
        first, last = log.index(header), log.index(events(log)[2])
        pcm = b"".join(x for x in log[first + 1:last] if isinstance(x, bytes))
        reply = models.transcribe(Audio(pcm, header["sample_rate"])).lower()
        assert "you said" in reply and "kitchen" in reply
        result = events(log)[-1]
        assert result["output"].lower().startswith("you said turn on the kitchen lights")
        async with d.http.get(d.url(f"/api/runs/{result['run_id']}")) as resp:
            run = await resp.json()
        async with d.http.get(d.url("/metrics")) as resp:
            metrics = await resp.text()
        assert wav.seconds > 1.0
        assert "turn" in json.dumps(run)
        stages = voice_stages(metrics, "echo")
        assert set(stages) == {"endpointing", "stt", "first_audio", "voice_to_voice"}, stages
        assert all(count == 1 for count, _ in stages.values()), stages
        # end of speech to first reply audio covers the stages between them
        v2v = stages["voice_to_voice"][1]
        assert v2v >= stages["endpointing"][1] + stages["stt"][1], stages


def voice_stages(metrics: str, pipeline: str) -> dict[str, tuple[int, float]]:
    """``stage -> (count, sum)`` of ``harkd_voice_stage_seconds`` for one pipeline."""
    found: dict[str, list[float]] = {}
    for line in metrics.splitlines():
        for part, index in (("_count{", 0), ("_sum{", 1)):
            prefix = "harkd_voice_stage_seconds" + part
            if line.startswith(prefix) and f'pipeline="{pipeline}"' in line:
                stage = line.split('stage="')[1].split('"')[0]
                found.setdefault(stage, [0, 0.0])[index] = float(line.rsplit(" ", 1)[1])
    return {k: (int(v[0]), v[1]) for k, v in found.items()}


def open_pcm(path: Path) -> bytes:
    import wave

    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


async def test_stop_ends_the_turn_and_interrupt_stops_the_reply(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("long", LONG)
        speech = read_wav(speak("read me a story", pad=0.3))
        async with d.http.ws_connect(d.ws_url("/ws/long")) as ws:
            log: list[Any] = []
            # no trailing silence: only the stop message can end this turn
            trimmed = Audio(speech.pcm[: len(speech.pcm) - 16000 * 2 // 4])
            await send_pcm(ws, trimmed)
            await ws.send_json({"type": "stop"})
            reader = asyncio.create_task(receive(ws, log))
            await wait_until(lambda: sum(isinstance(x, bytes) for x in log) > 10, 60)
            await ws.send_json({"type": "interrupt"})
            await asyncio.wait_for(reader, 60)
        ev = events(log)
        end = next(e for e in ev if e["type"] == "audio_end")
        assert end["interrupted"] is True
        assert ev[-1]["type"] == "result"
        spoken = ev[-1]["output"]
        assert spoken.startswith("This is sentence number 0") and "number 11" not in spoken


async def test_bad_control_messages_are_answered_with_errors(
        tmp_path: Path, models: Models) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("echo", ECHO)
        async with d.http.ws_connect(d.ws_url("/ws/echo")) as ws:
            await ws.send_bytes(b"\0" * 640)
            await ws.send_json({"type": "start", "sample_rate": 48000})
            msg = await ws.receive_json(timeout=10)
            assert msg["type"] == "error" and "start must come first" in msg["message"]
            await ws.send_str("hello")
            msg = await ws.receive_json(timeout=10)
            assert msg["type"] == "error"
