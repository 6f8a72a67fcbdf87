"""harkd drives a real wyoming-satellite process: its microphone plays generated speech,
its speaker writes the reply to a file, and the reply must be speech answering it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import DaemonHandle, capture_logs, free_port, run_daemon, wait_until
from harkd.testing_satellite import SND_RATE, Satellite, run_satellite
from harkd.voice.frames import Audio, read_wav, rms

from .conftest import Models, Speak

pytestmark = pytest.mark.anyio

PIPELINE = """\
trigger:
  satellite:
    uri: {uris}
    vad: {{silence: 500ms}}
    backoff_max: 1s
steps:
  - stt: {{}}
  - template: "You said {{{{ input }}}}"
  - tts: {{}}
"""


def speech_pcm(speak: Speak, text: str) -> bytes:
    """Generated speech with a little silence before it and none after (the microphone
    then plays silence), so the end of speech is when the file ends."""
    audio = read_wav(speak(text, pad=0.3))
    pcm = audio.pcm
    trimmed = len(pcm)
    while trimmed > 2 and abs(int.from_bytes(pcm[trimmed - 2:trimmed], "little",
                                             signed=True)) < 300:
        trimmed -= 2
    return pcm[:trimmed]


async def links(d: DaemonHandle, name: str) -> dict[str, Any]:
    trigger = d.daemon.catalog.entries[name].bound.pipeline.trigger  # type: ignore[union-attr]
    live: dict[str, Any] = trigger.live
    return live


async def streaming(d: DaemonHandle, name: str, sat: Satellite) -> None:
    """Wait until harkd is connected to ``sat`` and hears its microphone."""
    async def hearing() -> bool:
        link = (await links(d, name)).get(sat.uri)
        return link is not None and link.connected and link.chunks > 3

    await wait_until(hearing, 30)


async def finished_run(d: DaemonHandle, pipeline: str) -> dict[str, Any]:
    """The newest run of ``pipeline`` once the run log has its end (the reply reaches
    the speaker a moment before the run is over and written)."""
    async def done() -> list[dict[str, Any]]:
        async with d.http.get(d.url(f"/api/runs?pipeline={pipeline}&status=ok")) as resp:
            runs: list[dict[str, Any]] = (await resp.json())["runs"]
        return runs

    await wait_until(done, 30, interval=0.1)
    async with d.http.get(d.url(f"/api/runs/{(await done())[0]['id']}")) as resp:
        run: dict[str, Any] = await resp.json()
    return run


async def reply_of(sat: Satellite, count: int) -> tuple[dict[str, float], Audio]:
    await wait_until(lambda: len(sat.replies()) >= count, 90, interval=0.1)
    meta, pcm = sat.replies()[count - 1]
    return meta, Audio(pcm, SND_RATE)


async def test_satellite_turn_is_transcribed_answered_and_spoken(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_satellite(tmp_path / "sat") as sat, run_daemon(tmp_path / "d") as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("kitchen", PIPELINE.format(uris=sat.uri))
        await streaming(d, "kitchen", sat)
        sat.say(speech_pcm(speak, "turn on the kitchen lights"))
        meta, reply = await reply_of(sat, 1)
        # seconds of audio in the reply (its samples / rate), not time taken
        assert reply.seconds > 1.0 and rms(reply.pcm) > 0.02
        heard = models.transcribe(reply).lower()
        assert "you" in heard and "lights" in heard
        assert meta["first"] > sat.spoken()[0]["end"]

        run = await finished_run(d, "kitchen")
        assert "kitchen lights" in run["steps"][0]["detail"]["text"].lower()
        assert run["trigger_data"]["kind"] == "satellite"
        assert run["trigger_data"]["session"] == "satellite:Kitchen"
        assert run["input"]["type"] == "audio" and "turn" in run["input"]
        assert run["steps"][-1]["detail"]["seconds"] > 1.0  # of speech synthesised
        assert "<" not in json.dumps(run["output"])


async def garbage_satellite(port: int, payload: bytes) -> asyncio.Server:
    """A scripted peer that accepts harkd and answers its describe with ``payload``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readline()
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_two_satellites_have_their_own_sessions_and_bad_ones_are_contained(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    bad_port, gone_port = free_port(), free_port()
    bad = await garbage_satellite(bad_port, b"\x00\xffnot wyoming at all\n")
    async with run_satellite(tmp_path / "a", name="Kitchen") as a, \
            run_satellite(tmp_path / "b", name="Hall") as b, \
            run_daemon(tmp_path / "d") as d:
        d.daemon.services.shared.update(models.shared())
        uris = json.dumps([a.uri, b.uri, f"tcp://127.0.0.1:{bad_port}",
                           f"tcp://127.0.0.1:{gone_port}"])
        with capture_logs() as logs:
            await d.write("house", PIPELINE.format(uris=uris))
            await streaming(d, "house", a)
            await streaming(d, "house", b)
            a.say(speech_pcm(speak, "turn on the kitchen lights"))
            b.say(speech_pcm(speak, "what time is it"))
            _, reply_a = await reply_of(a, 1)
            _, reply_b = await reply_of(b, 1)
        assert "lights" in models.transcribe(reply_a).lower()
        assert "time" in models.transcribe(reply_b).lower()
        events = [e["event"] for e in logs]
        assert "satellite_protocol_error" in events  # the garbage peer, disconnected
        assert "satellite_connect_failed" in events  # nobody at gone_port: retried

        async with d.http.get(d.url("/api/runs?pipeline=house")) as resp:
            ids = [r["id"] for r in (await resp.json())["runs"]]
        seen = set()
        for run_id in ids:
            async with d.http.get(d.url(f"/api/runs/{run_id}")) as resp:
                seen.add((await resp.json())["trigger_data"]["session"])
        assert seen == {"satellite:Kitchen", "satellite:Hall"}
    bad.close()


async def test_a_restarted_satellite_is_reconnected(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    port = free_port()
    async with run_daemon(tmp_path / "d") as d:
        d.daemon.services.shared.update(models.shared())
        uri = f"tcp://127.0.0.1:{port}"
        async with run_satellite(tmp_path / "s1", port=port) as sat:
            await d.write("porch", PIPELINE.format(uris=uri))
            await streaming(d, "porch", sat)
        # the satellite is gone mid-stream; it comes back on the same port
        link = (await links(d, "porch"))[uri]
        await wait_until(lambda: not link.connected, 10)
        async with run_satellite(tmp_path / "s2", port=port) as sat:
            await wait_until(lambda: link.connects >= 2, 30)
            await streaming(d, "porch", sat)
            sat.say(speech_pcm(speak, "turn on the kitchen lights"))
            _, reply = await reply_of(sat, 1)
            assert "lights" in models.transcribe(reply).lower()


async def scripted_satellite(port: int, script: Any) -> asyncio.Server:
    """A scripted stand-in for a satellite (for faults a real one does not make): it
    answers describe with info, waits for run-satellite, then runs ``script(writer)``."""
    from wyoming.event import async_read_event, async_write_event
    from wyoming.info import Attribution, Info
    from wyoming.info import Satellite as SatelliteInfo

    info = Info(satellite=SatelliteInfo(name="Scripted", attribution=Attribution("t", ""),
                                        installed=True, description=None, version=None))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (event := await async_read_event(reader)) is not None:
                if event.type == "describe":
                    await async_write_event(info.event(), writer)
                elif event.type == "run-satellite":
                    await script(writer)
                    break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_faulty_satellites_are_logged_and_contained(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    from wyoming.audio import AudioChunk
    from wyoming.event import async_write_event

    speech = speech_pcm(speak, "turn on the kitchen lights")

    async def half_then_gone(writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(speech) * 2 // 3, 2048):
            await async_write_event(AudioChunk(rate=16000, width=2, channels=1,
                                               audio=speech[i:i + 2048]).event(), writer)
        await asyncio.sleep(0.2)

    async def odd_rate(writer: asyncio.StreamWriter) -> None:
        for _ in range(20):
            await async_write_event(AudioChunk(rate=96000, width=2, channels=1,
                                               audio=b"\1\0" * 1024).event(), writer)
        await asyncio.sleep(0.5)

    async def huge(writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"type": "audio-chunk", "payload_length": 50000000}\n')
        await writer.drain()
        await asyncio.sleep(0.5)

    ports = [free_port() for _ in range(3)]
    servers = [await scripted_satellite(p, s)
               for p, s in zip(ports, (half_then_gone, odd_rate, huge), strict=True)]
    async with run_satellite(tmp_path / "ok") as good, run_daemon(tmp_path / "d") as d:
        d.daemon.services.shared.update(models.shared())
        uris = json.dumps([good.uri, *(f"tcp://127.0.0.1:{p}" for p in ports)])
        with capture_logs() as logs:
            await d.write("mixed", PIPELINE.format(uris=uris))
            await streaming(d, "mixed", good)
            await wait_until(lambda: {"satellite_bad_audio", "satellite_protocol_error"}
                             <= {e["event"] for e in logs}, 30)
            await wait_until(lambda: any(e["event"] == "satellite_disconnected"
                                         and e.get("mid_utterance") for e in logs), 30)
            good.say(speech_pcm(speak, "what time is it"))
            _, reply = await reply_of(good, 1)
        assert "time" in models.transcribe(reply).lower()
        bad = [e for e in logs if e["event"] == "satellite_bad_audio"]
        assert "unsupported sample rate 96000" in bad[0]["error"]
        huge_errors = [e for e in logs if e["event"] == "satellite_protocol_error"]
        assert "over the limit" in huge_errors[0]["error"]
    for server in servers:
        server.close()


async def test_a_pipeline_that_does_not_speak_leaves_the_speaker_alone(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    quiet = "trigger: {satellite: {uri: %s, vad: {silence: 500ms}}}\n" \
            "steps:\n  - stt: {}\n  - template: \"noted: {{ input }}\"\n"
    async with run_satellite(tmp_path / "sat") as sat, run_daemon(tmp_path / "d") as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("notes", quiet % sat.uri)
        await streaming(d, "notes", sat)
        sat.say(speech_pcm(speak, "turn on the kitchen lights"))

        run = await finished_run(d, "notes")
        assert run["output"].lower().startswith("noted: turn on the kitchen lights")
        await asyncio.sleep(1.0)
        assert sat.replies() == [] and not list(sat.replies_folder.glob("*"))
