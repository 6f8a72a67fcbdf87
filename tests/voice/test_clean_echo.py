"""Cleaner audio: WebRTC noise suppression and gain on incoming frames, and echo
cancellation against what the listener itself played (``barge_in: {echo: reference}``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from harkd.testing import run_daemon
from harkd.voice.clean import CleanConfig, Cleaner
from harkd.voice.frames import FRAME_BYTES, RATE, from_pcm, read_wav, resample, to_pcm
from harkd.voice.mic import listen_config

from .conftest import Models, Speak

LONG = """\
trigger: {websocket: {mode: audio, audio: AUDIO}}
steps:
  - stt: {}
  - template: >-
      {% if 'tell me' in input|lower %}{% for i in range(12) %}This is sentence number
      {{ i }} of a long reply. {% endfor %}{% else %}Okay.{% endif %}
  - tts: {}
  - play: {}
"""


def frames_of(samples: Any) -> list[bytes]:
    pcm = to_pcm(samples)
    return [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


def level(frames: list[bytes]) -> float:
    s = from_pcm(b"".join(frames))
    return float(np.sqrt(np.mean(s * s)))


def test_noise_suppression_takes_steady_noise_down() -> None:
    noise = np.random.default_rng(1).normal(0, 0.02, RATE * 3).astype(np.float32)
    cleaner = Cleaner(CleanConfig(noise_suppression=3))
    out = [cleaner(f) for f in frames_of(noise)]
    # after a second of adapting, the noise is well below what came in
    assert level(out[50:]) < 0.5 * level(frames_of(noise)[50:])


def test_auto_gain_raises_quiet_speech(speak: Speak) -> None:
    quiet = from_pcm(read_wav(speak("turn on the kitchen lights please")).pcm) * 0.03
    cleaner = Cleaner(CleanConfig(auto_gain=3))
    frames = frames_of(np.concatenate([quiet, quiet, quiet]))
    out = [cleaner(f) for f in frames]
    third = len(frames) // 3
    assert level(out[-third:]) > 2 * level(frames[-third:])


def test_the_options_reach_the_listener_config() -> None:
    config = listen_config({"clean": {"noise_suppression": 2, "auto_gain": 6},
                            "barge_in": {"echo": "level", "ratio": 3}})
    assert config.clean == CleanConfig(noise_suppression=2, auto_gain=6)
    assert config.barge_in.echo == "level" and config.barge_in.ratio == 3
    assert listen_config({}).barge_in.echo == "reference"
    assert not listen_config({}).clean.enabled


class EchoingClient:
    """A WebSocket audio client whose microphone hears its own speaker, as a laptop with
    its speaker next to its mic would: every 20 ms it plays the next 20 ms of the reply it
    has received (silence when there is none) and sends a mic frame of what it was asked
    to say plus ``gain`` times what it played.

    With ``own_thread`` it runs in a thread with its own event loop and HTTP session and
    paces itself by the monotonic clock, as a real client runs in its own process on its
    sound card's clock: when the daemon's loop stalls, its frames queue up in the socket
    and its speaker runs dry. Without, it shares the daemon's loop, stalls with it and
    then plays its buffer on (the reference has a gap there that its echo has not).
    """

    def __init__(self, url: str, gain: float, own_thread: bool) -> None:
        self.url = url
        self.gain = gain
        self.speech = np.zeros(0, dtype=np.float32)
        self.echo = np.zeros(0, dtype=np.float32)
        self.events: list[dict[str, Any]] = []
        self.reply_seconds = 0.0
        self._rate = RATE
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        if own_thread:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def __aenter__(self) -> EchoingClient:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
        else:
            self._thread.start()
        try:
            await self._call(self._connect())
        except BaseException:
            await self._stop_thread()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._call(self._close())
        finally:
            await self._stop_thread()

    async def _stop_thread(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()

    def say(self, samples: Any) -> None:
        """Start saying ``samples`` (over whatever is playing)."""
        self._loop.call_soon_threadsafe(setattr, self, "speech", samples)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self._call(self.ws.send_json(message))

    async def finished(self) -> None:
        """Wait for the run's result (or error)."""
        await self._call(asyncio.wait_for(asyncio.shield(self._tasks[1]), 60))

    def done(self) -> bool:
        return self._tasks[1].done()

    async def _call(self, coro: Any) -> Any:
        if self._thread is None:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _connect(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            self.ws = await self.http.ws_connect(self.url)
        except BaseException:
            await self.http.close()
            raise
        self._tasks = [asyncio.create_task(self._mic()), asyncio.create_task(self._speaker())]

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()
        await self.http.close()

    def _frame(self) -> Any:
        n = FRAME_BYTES // 2
        frame = np.zeros(n, dtype=np.float32)
        for name, gain in (("speech", 1.0), ("echo", self.gain)):
            buf = getattr(self, name)
            frame[:min(n, buf.size)] += buf[:n] * gain
            setattr(self, name, buf[n:])
        return frame

    async def _mic(self) -> None:
        tick = time.monotonic()
        while True:
            await self.ws.send_bytes(to_pcm(self._frame()))
            tick += 0.02
            await asyncio.sleep(max(0.0, tick - time.monotonic()))

    def _heard(self, samples: Any) -> None:
        self.echo = np.concatenate([self.echo, samples])
        self.reply_seconds += samples.size / RATE

    async def _speaker(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self._heard(resample(from_pcm(msg.data), self._rate))
            else:
                event = json.loads(msg.data)
                self.events.append(event)
                if event["type"] == "audio":
                    self._rate = event["sample_rate"]
                if event["type"] in ("result", "error"):
                    return


@pytest.fixture(params=[False, True], ids=["daemons_loop", "own_thread"])
def own_thread(request: pytest.FixtureRequest) -> bool:
    """Whether the echoing client runs in a thread of its own (see EchoingClient)."""
    return bool(request.param)


async def speak_over_own_echo(tmp_path: Path, models: Models, speak: Speak, own_thread: bool,
                              audio: str, barge: Any = None) -> EchoingClient:
    """Ask for a long reply, hear it back through the client's "speaker", and after two
    seconds of it say ``barge`` (samples) over it; interrupt from the client after six."""
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("long", LONG.replace("AUDIO", audio))
        async with EchoingClient(d.ws_url("/ws/long"), 1.0, own_thread) as client:
            client.say(from_pcm(read_wav(speak("tell me a story", pad=0.3)).pcm))
            deadline = asyncio.get_running_loop().time() + 60
            while client.reply_seconds < 6.0 and not client.done():
                assert asyncio.get_running_loop().time() < deadline, client.events
                if barge is not None and client.reply_seconds > 2.0:
                    client.say(barge)
                    barge = None
                await asyncio.sleep(0.1)
            with contextlib.suppress(ConnectionError):
                await client.send_json({"type": "interrupt"})
            await client.finished()
        return client


@pytest.mark.anyio
async def test_a_reply_heard_through_the_clients_speaker_does_not_interrupt_itself(
        tmp_path: Path, models: Models, speak: Speak, own_thread: bool) -> None:
    client = await speak_over_own_echo(tmp_path, models, speak, own_thread,
                                       "{vad: {silence: 400ms}}")
    kinds = [e["type"] for e in client.events]
    assert "interrupt" not in kinds, kinds  # the server never heard a barge-in
    assert kinds[0] == "transcript" and kinds[-1] == "result", kinds
    # reply_seconds is audio (samples received / RATE), not a clock: 6 s of reply
    assert client.reply_seconds >= 6.0, client.events
    end = next(e for e in client.events if e["type"] == "audio_end")
    assert end["interrupted"] is True  # by the client's interrupt, after 6 s of reply


@pytest.mark.anyio
async def test_with_cleaning_on_the_reply_still_does_not_interrupt_itself(
        tmp_path: Path, models: Models, speak: Speak, own_thread: bool) -> None:
    client = await speak_over_own_echo(
        tmp_path, models, speak, own_thread,
        "{vad: {silence: 400ms}, clean: {noise_suppression: 2, auto_gain: 3}}")
    kinds = [e["type"] for e in client.events]
    assert "interrupt" not in kinds, kinds
    assert "tell me" in client.events[0]["text"].lower(), client.events[0]
    assert client.reply_seconds >= 6.0  # seconds of audio received, not of clock


@pytest.mark.anyio
async def test_speech_no_louder_than_the_echo_barges_in(
        tmp_path: Path, models: Models, speak: Speak, own_thread: bool) -> None:
    # the level heuristic needs voice twice as loud as the reply; with the reply's echo
    # taken out, a user speaking at the reply's own level is heard
    user = from_pcm(read_wav(speak("what time is it", engine="piper", pad=0.3)).pcm)
    client = await speak_over_own_echo(tmp_path, models, speak, own_thread,
                                       "{vad: {silence: 400ms}}", barge=user * 0.6)
    kinds = [e["type"] for e in client.events]
    assert "interrupt" in kinds, kinds
    assert client.events[kinds.index("interrupt")]["reason"] == "barge_in"
