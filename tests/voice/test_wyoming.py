"""harkd as a Wyoming server, spoken to with the ``wyoming`` package's own client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeVoice

from harkd.testing import DaemonHandle, capture_logs, free_port, run_daemon, wait_until
from harkd.voice.frames import Audio, from_pcm, read_wav, resample, rms, to_pcm
from harkd.voice.wyoming_io import MAX_LINE
from harkd.voice.wyoming_server import ServerConfig, Session

from .conftest import Models, Speak

pytestmark = pytest.mark.anyio

PIPELINE = """\
description: The kitchen helper
trigger:
  wyoming: {{listen: "127.0.0.1:{port}", audio_timeout: 1s, max_audio: 4s}}
steps:
  - template: "You said {{{{ input }}}}"
"""

FAILING = """\
trigger: {{wyoming: {{listen: "127.0.0.1:{port}", serve: [handle]}}}}
steps:
  - http: {{url: "http://127.0.0.1:9/nothing", timeout: 1s}}
"""


async def serve(d: DaemonHandle, text: str = PIPELINE, name: str = "kitchen") -> int:
    port = free_port()
    await d.write(name, text.format(port=port))
    assert d.state(name) == "active", d.daemon.catalog.entries[name].errors
    return port


async def client(port: int) -> AsyncTcpClient:
    c = AsyncTcpClient("127.0.0.1", port, read_timeout=30)
    await c.connect()
    return c


async def ask(c: AsyncTcpClient, event: Event) -> Event:
    await c.write_event(event)
    answer = await c.read_event()
    assert answer is not None
    return answer


async def send_audio(c: AsyncTcpClient, audio: Audio, *, stop: bool = True) -> None:
    await c.write_event(AudioStart(rate=audio.rate, width=2, channels=1).event())
    step = 2048
    for i in range(0, len(audio.pcm), step):
        await c.write_event(AudioChunk(rate=audio.rate, width=2, channels=1,
                                       audio=audio.pcm[i:i + step]).event())
    if stop:
        await c.write_event(AudioStop().event())


async def read_speech(c: AsyncTcpClient) -> Audio:
    start = AudioStart.from_event(await c.read_event())  # type: ignore[arg-type]
    pcm = bytearray()
    while True:
        event = await c.read_event()
        assert event is not None
        if AudioStop.is_type(event.type):
            return Audio(bytes(pcm), start.rate)
        chunk = AudioChunk.from_event(event)
        assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, 2, 1)
        pcm += chunk.audio


async def test_describe_lists_asr_tts_and_the_pipeline(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        port = await serve(d)
        c = await client(port)
        info = Info.from_event(await ask(c, Describe().event()))
        assert info.asr[0].models[0].name == "tiny.en"
        assert {v.name for v in info.tts[0].voices} == {"joe", "espeak"}
        assert info.handle[0].models[0].name == "kitchen"
        assert info.handle[0].models[0].description == "The kitchen helper"
        assert Pong.is_type((await ask(c, Ping(text="hi").event())).type)
        await c.disconnect()


async def test_asr_transcribes_audio_at_any_supported_rate(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        port = await serve(d)
        c = await client(port)
        await c.write_event(Transcribe(language="en").event())
        speech = read_wav(speak("turn on the kitchen lights"))
        at_22k = Audio(to_pcm(resample(from_pcm(speech.pcm), 16000, 22050)), 22050)
        await send_audio(c, at_22k)
        event = await c.read_event()
        assert event is not None and Transcript.is_type(event.type)
        assert "kitchen lights" in Transcript.from_event(event).text.lower()
        await c.disconnect()


async def test_tts_streams_speech(tmp_path: Path, models: Models) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        port = await serve(d)
        c = await client(port)
        await c.write_event(Synthesize(text="The kitchen lights are on. Good night.").event())
        audio = await read_speech(c)
        assert audio.rate == 22050 and audio.seconds > 1.0 and rms(audio.pcm) > 0.02
        heard = models.transcribe(audio).lower()
        assert "lights" in heard and "night" in heard
        await c.write_event(Synthesize(text="Hello there.",
                                       voice=SynthesizeVoice(name="espeak")).event())
        robot = await read_speech(c)
        assert robot.seconds > 0.3 and "hello" in models.transcribe(robot).lower()
        await c.disconnect()


async def test_handle_runs_the_pipeline_and_logs_the_run(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        port = await serve(d)
        c = await client(port)
        answer = await ask(c, Transcript(text="what time is it").event())
        assert Handled.is_type(answer.type)
        assert Handled.from_event(answer).text == "You said what time is it"
        await c.disconnect()
        async with d.http.get(d.url("/api/runs?pipeline=kitchen")) as resp:
            runs = (await resp.json())["runs"]
        assert runs[0]["trigger"] == "wyoming"
        async with d.http.get(d.url(f"/api/runs/{runs[0]['id']}")) as resp:
            run = await resp.json()
        assert run["input"] == "what time is it" and run["trigger_data"]["session"]

        failing = await serve(d, FAILING, "broken")
        c = await client(failing)
        answer = await ask(c, Transcript(text="hello").event())
        assert NotHandled.is_type(answer.type) and NotHandled.from_event(answer).text
        # this listener serves only handle: asr is refused, and the connection closed
        answer = await ask(c, AudioStart(rate=16000, width=2, channels=1).event())
        assert Error.is_type(answer.type) and "does not serve asr" in answer.data["text"]
        assert await c.read_event() is None
        await c.disconnect()


async def raw(port: int, data: bytes) -> list[dict[str, Any]]:
    """Send raw bytes; the JSON headers of what comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = []
    while line := await asyncio.wait_for(reader.readline(), 10):
        header = json.loads(line)
        if header.get("data_length"):
            header["data"] = json.loads(await reader.readexactly(header["data_length"]))
        out.append(header)
    writer.close()
    return out


async def test_bad_clients_are_bounded_and_others_go_on(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        port = await serve(d)
        with capture_logs() as logs:
            # a client that never sends audio-stop: refused after audio_timeout (1s)
            silent = await client(port)
            await send_audio(silent, Audio(b"\0" * 16000), stop=False)
            answer = await silent.read_event()
            assert answer is not None and Error.is_type(answer.type)
            assert "no audio-stop" in answer.data["text"]
            assert await silent.read_event() is None
            # endless audio: refused past max_audio (4s)
            endless = await client(port)
            await send_audio(endless, Audio(b"\1\0" * 16000 * 5), stop=False)
            answer = await endless.read_event()
            assert answer is not None and "longer than 4s" in answer.data["text"]
            # an unsupported sample rate
            odd = await client(port)
            answer = await ask(odd, AudioStart(rate=96000, width=2, channels=1).event())
            assert "unsupported sample rate" in answer.data["text"]
            # garbage, and a header announcing a payload over the limit
            errors = await raw(port, b"this is not json\n")
            assert errors[-1]["data"]["text"] == "event header is not JSON"
            errors = await raw(port, b'{"type": "audio-chunk", "payload_length": 99999999}\n')
            assert "over the limit" in errors[-1]["data"]["text"]
            errors = await raw(port, b"x" * 200_000 + b"\n")
            assert "longer than" in errors[-1]["data"]["text"]
        kinds = [e["event"] for e in logs if e["event"] == "wyoming_protocol_error"]
        assert len(kinds) == 6
        # the daemon and its other clients are unaffected
        c = await client(port)
        await send_audio(c, read_wav(speak("what time is it")))
        event = await c.read_event()
        assert event is not None and "time" in Transcript.from_event(event).text.lower()
        await c.disconnect()


async def test_off_loopback_needs_explicit_auth_none(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        await d.write("public", 'trigger: {wyoming: {listen: "0.0.0.0:10799"}}\n'
                                "steps: [{template: hi}]\n")
        assert d.state("public") == "rejected"
        errors = d.daemon.catalog.entries["public"].errors
        assert "auth: none" in errors[0].message
        port = free_port()
        await d.write("public", f'trigger: {{wyoming: {{listen: "0.0.0.0:{port}", '
                                'auth: none}}\nsteps: [{template: hi}]\n')
        assert d.state("public") == "active"


async def test_connections_past_the_limit_are_refused(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        port = await serve(d, 'trigger: {{wyoming: {{listen: "127.0.0.1:{port}", '
                              'max_connections: 1}}}}\nsteps: [{{template: hi}}]\n')
        first = await client(port)
        assert Info.is_type((await ask(first, Describe().event())).type)
        second = await client(port)
        answer = await second.read_event()
        assert answer is not None and Error.is_type(answer.type)
        assert answer.data["code"] == "busy"
        await first.disconnect()
        await second.disconnect()

        async def admitted() -> bool:  # once the server has seen the first one go
            third = await client(port)
            try:
                answer = await ask(third, Describe().event())
            except ConnectionError:  # refused, and closed before it read describe
                return False
            finally:
                with contextlib.suppress(ConnectionError):
                    await third.disconnect()
            return Info.is_type(answer.type)

        await wait_until(admitted, 10, interval=0.05)


async def test_an_edit_rebinds_the_port_and_serves_the_new_version(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        port = free_port()
        text = 'trigger: {{wyoming: {{listen: "127.0.0.1:{port}"}}}}\nsteps: [{{template: {w}}}]\n'
        await d.write("edit", text.format(port=port, w="one"))
        c = await client(port)
        assert Handled.from_event(await ask(c, Transcript(text="x").event())).text == "one"
        await d.write("edit", text.format(port=port, w="two"))
        assert d.state("edit") == "active"
        assert await c.read_event() is None  # the old version's connections are closed
        c = await client(port)
        assert Handled.from_event(await ask(c, Transcript(text="x").event())).text == "two"
        await c.disconnect()
        await d.remove("edit")
        with pytest.raises(OSError):
            await client(port)


async def test_a_session_cancelled_as_an_event_arrives_ends(tmp_path: Path) -> None:
    # Unbind cancels every session. A cancellation that comes in the loop pass where the
    # read of an event completes must still end the session: asyncio.wait_for on Python
    # 3.11 returned the event instead, so the session answered it and waited for the next
    # one. The cancel is moved over every loop pass, from before the event is read to
    # after it is answered; a socket pair delivers the bytes as they are written, so each
    # pass is the same in every run.
    async with run_daemon(tmp_path) as d:
        await serve(d)
        bound = d.daemon.catalog.bound("kitchen")
        assert bound is not None
        config = ServerConfig(host="127.0.0.1", port=0)
        answered = []
        for passes in range(12):
            ours, theirs = socket.socketpair()
            reader, writer = await asyncio.open_connection(sock=ours, limit=MAX_LINE)
            peer_reader, peer = await asyncio.open_connection(sock=theirs)
            session = asyncio.create_task(Session(bound, config, reader, writer).serve())
            await async_write_event(Ping(text="first").event(), peer)
            first = await async_read_event(peer_reader)  # the session waits for the next
            assert first is not None and Pong.is_type(first.type)
            await async_write_event(Ping(text="second").event(), peer)
            for _ in range(passes):
                await asyncio.sleep(0)
            session.cancel()
            peer.write_eof()  # a session that goes on reads the end and returns
            await asyncio.gather(session, return_exceptions=True)
            assert session.cancelled(), f"cancelled {passes} passes after the event"
            try:
                answer = await async_read_event(peer_reader)
            except ConnectionResetError:  # it closed with the second ping unread
                answer = None
            answered.append(answer is not None and Pong.is_type(answer.type))
            peer.close()
        # the passes covered both sides: cancelled before the read and after the answer
        assert not answered[0] and answered[-1]


def test_checking_wyoming_and_satellite_pipelines_imports_neither(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "w.yaml").write_text('trigger: {wyoming: {listen: "127.0.0.1:10700"}}\n'
                                     "steps: [{template: hi}]\n")
    (tmp_path / "s.yaml").write_text("trigger: {satellite: {uri: tcp://127.0.0.1:10700}}\n"
                                     "steps: [{stt: {}}, {tts: {}}]\n")
    code = ("import sys\nfrom harkd.check import check\n"
            f"report = check([{str(tmp_path / 'w.yaml')!r}, {str(tmp_path / 's.yaml')!r}])\n"
            "assert not report.errors, report.errors\n"
            "heavy = [m for m in ('wyoming', 'numpy', 'faster_whisper', 'piper') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
