"""The full local voice stack: WebSocket audio → stt → llm (default model) → tts → play."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from harkd.core.registry import default as default_registry
from harkd.testing import run_daemon
from harkd.voice.frames import Audio, read_wav

from .conftest import Models, Speak
from .test_wsaudio import events, receive, send_pcm, voice_stages

pytestmark = [pytest.mark.anyio, pytest.mark.model]

ASSISTANT = """\
trigger: {websocket: {mode: audio, audio: {vad: {silence: 500ms}}}}
steps:
  - stt: {}
  - llm: {model: default, stream: true, max_tokens: 40, system: Answer in one sentence.}
  - tts: {}
  - play: {}
"""


async def test_spoken_question_gets_a_spoken_llm_answer(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    if "llm" not in default_registry().steps:
        pytest.fail("the llm step is not registered")
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("ask", ASSISTANT)
        async with d.http.ws_connect(d.ws_url("/ws/ask")) as ws:
            log: list[Any] = []
            reader = asyncio.create_task(receive(ws, log))
            await send_pcm(ws, read_wav(speak("what is the capital of france")))
            await asyncio.wait_for(reader, 180)
        kinds = [e["type"] for e in events(log)]
        assert kinds[0] == "transcript" and "capital" in events(log)[0]["text"].lower()
        assert "delta" in kinds and "audio" in kinds and kinds[-1] == "result", kinds
        header = next(e for e in events(log) if e["type"] == "audio")
        pcm = b"".join(x for x in log if isinstance(x, bytes))
        assert models.transcribe(Audio(pcm, header["sample_rate"])).strip()
        async with d.http.get(d.url("/metrics")) as resp:
            stages = voice_stages(await resp.text(), "ask")
        assert set(stages) == {"endpointing", "stt", "llm_first_token", "first_audio",
                               "voice_to_voice"}, stages
