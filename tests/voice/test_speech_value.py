"""Speech is a value: WAV in and out of webhooks, speech back to audio WebSocket clients
without a play step, plain JSON (never a repr) in run results and the run log, and
OpenAI's audio endpoints on the gateway, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import run_daemon
from harkd.voice.frames import Audio, from_pcm, read_wav, rms

from .conftest import Models, Speak
from .test_wsaudio import events, open_pcm, receive, send_pcm

pytestmark = pytest.mark.anyio

SAY = """\
trigger: {http: {}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
  - tts: {}
"""

HEARD = """\
trigger: {http: {}}
steps:
  - stt: {}
"""

WS = """\
trigger: {websocket: {mode: audio, audio: {vad: {silence: 500ms}}}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
  - tts: {}
"""


def wav_of(data: bytes) -> Audio:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return Audio(w.readframes(w.getnframes()), w.getframerate())


def no_repr(doc: Any) -> None:
    """No value anywhere in ``doc`` is an object's repr such as ``<speech ...>``."""
    text = json.dumps(doc)
    for marker in ("<speech", "<audio", "<utterance", "object at 0x"):
        assert marker not in text, (marker, text[:400])


async def run_of(d: Any, run_id: str) -> dict[str, Any]:
    async with d.http.get(d.url(f"/api/runs/{run_id}")) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    return doc


async def test_wav_body_in_and_wav_answer_out(tmp_path: Path, models: Models,
                                              speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("say", SAY)
        body = speak("turn on the kitchen lights").read_bytes()
        async with d.http.post(d.url("/hooks/say"), data=body,
                               headers={"Content-Type": "audio/wav"}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "audio/wav"
            run_id = resp.headers["X-Harkd-Run-Id"]
            reply = wav_of(await resp.read())
        assert reply.seconds > 1.0 and rms(reply.pcm) > 0.02
        heard = models.transcribe(reply).lower()
        assert "you" in heard and "lights" in heard
        run = await run_of(d, run_id)
        no_repr(run)
        assert run["output"]["type"] == "speech" and run["output"]["seconds"] > 1.0
        assert run["output"]["text"].lower().startswith("you said turn on the kitchen")
        assert run["input"]["type"] == "audio" and run["input"]["rate"] == 16000


async def test_l16_body_is_raw_pcm(tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("heard", HEARD)
        pcm = open_pcm(speak("what time is it", rate=22050))
        async with d.http.post(d.url("/hooks/heard"), data=pcm,
                               headers={"Content-Type": "audio/L16; rate=22050"}) as resp:
            assert resp.status == 200, await resp.text()
            assert "time" in (await resp.text()).lower()
        swapped = bytearray(pcm)
        swapped[0::2], swapped[1::2] = swapped[1::2], swapped[0::2]
        async with d.http.post(d.url("/hooks/heard"), data=bytes(swapped), headers={
                "Content-Type": "audio/L16; rate=22050; endianness=big-endian"}) as resp:
            assert "time" in (await resp.text()).lower()
        for ctype, data in (("audio/wav", b"RIFF garbage"),
                            ("audio/L16; rate=fast", pcm[:640])):
            async with d.http.post(d.url("/hooks/heard"), data=data,
                                   headers={"Content-Type": ctype}) as resp:
                assert resp.status == 400
                assert "error" in await resp.json()


async def test_websocket_audio_pipeline_speaks_without_play(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("talk", WS)
        async with d.http.ws_connect(d.ws_url("/ws/talk")) as ws:
            log: list[Any] = []
            reader = asyncio.create_task(receive(ws, log))
            await send_pcm(ws, read_wav(speak("turn on the kitchen lights")))
            await asyncio.wait_for(reader, 60)
        ev = events(log)
        assert [e["type"] for e in ev] == ["transcript", "audio", "audio_end", "result"]
        pcm = b"".join(x for x in log if isinstance(x, bytes))
        reply = models.transcribe(Audio(pcm, ev[1]["sample_rate"])).lower()
        assert "you" in reply and "lights" in reply
        assert ev[-1]["output"].lower().startswith("you said turn on the kitchen lights")
        run = await run_of(d, ev[-1]["run_id"])
        no_repr(run)
        assert run["steps"][-1]["detail"]["seconds"] > 1.0


async def test_openai_sdk_transcribes_and_speaks(tmp_path: Path, models: Models,
                                                 speak: Speak) -> None:
    from openai import AsyncOpenAI

    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        client = AsyncOpenAI(base_url=d.url("/v1"), api_key="unused", max_retries=0)
        wav = speak("set a timer for ten minutes")
        with wav.open("rb") as f:
            text = await client.audio.transcriptions.create(model="whisper-1", file=f)
        assert "timer for 10 minutes" in text.text.lower()
        plain = await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav.read_bytes(), "audio/wav"),
            response_format="text")
        assert "timer" in str(plain).lower()

        speech = await client.audio.speech.create(
            model="tts-1", voice="alloy", input="The lights are on.", response_format="wav")
        audio = wav_of(speech.content)
        assert audio.seconds > 0.5 and rms(audio.pcm) > 0.02
        assert "lights" in models.transcribe(audio).lower()
        pcm = await client.audio.speech.create(model="tts-1", voice="espeak",
                                               input="Hello there.", response_format="pcm")
        assert float(abs(from_pcm(pcm.content)).max()) > 0.1

        import openai

        with pytest.raises(openai.BadRequestError):
            await client.audio.speech.create(model="tts-1", voice="alloy", input="x",
                                             response_format="mp3")
        with pytest.raises(openai.BadRequestError):
            await client.audio.transcriptions.create(
                model="whisper-1", file=("a.wav", b"not a wav", "audio/wav"))
        await client.close()


def test_invoke_prints_speech_as_a_value(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "speak.yaml").write_text("trigger: {http: {}}\nsteps:\n"
                                         "  - tts: {engine: espeak}\n")
    done = subprocess.run([sys.executable, "-m", "harkd", "invoke", "speak", "--pipelines",
                           str(tmp_path), "--input", '"hello there"'],
                          capture_output=True, text=True, timeout=60, check=True)
    value = json.loads(done.stdout)
    assert value["type"] == "speech" and value["text"] == "hello there"
    assert value["seconds"] > 0.3


async def test_audio_endpoints_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, token="sesame-123456") as d:
        async with d.http.post(d.url("/v1/audio/speech"), json={"input": "hi"}) as resp:
            assert resp.status == 401
        async with d.http.post(d.url("/v1/audio/transcriptions"), data=b"x") as resp:
            assert resp.status == 401
        async with d.http.post(d.url("/v1/audio/speech"), json={"input": ""},
                               headers={"Authorization": "Bearer sesame-123456"}) as resp:
            assert resp.status == 400 and "input is required" in await resp.text()
