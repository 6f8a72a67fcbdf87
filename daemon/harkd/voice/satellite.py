"""harkd drives Wyoming satellites, as Home Assistant does: connect, listen, answer.

For each satellite URI a :class:`SatelliteLink` keeps one TCP connection: it sends
``describe`` (and reads the satellite's ``info``), then ``run-satellite``; the satellite
answers ``run-pipeline`` and streams its microphone as ``audio-chunk`` events (all the
time, or after its own wake word). The audio goes through a
:class:`~harkd.voice.listen.Listener` (VAD endpointing, harkd's wake word when the
trigger sets one, barge-in), each turn runs the pipeline, the transcript goes back as a
``transcript`` event and the reply speech as ``audio-start`` (sent as the run starts,
so the satellite's speaker is ready in time), ``audio-chunk``..., ``audio-stop``, which
the satellite plays on its speaker.

Each satellite has its own connection, listener and session (``trigger.session``), so
several satellites can share one pipeline. A lost or refused connection is retried with
exponential backoff (0.5 s up to 30 s); a satellite that sends garbage or oversized
events is disconnected and retried the same way; audio in a format harkd does not take is
dropped with one warning per connection. None of this touches the other satellites.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.satellite import RunSatellite

from ..logs import get_logger
from ..records import dataclass
from .frames import Audio, Framer, Resampler
from .listen import ListenConfig, Listener
from .mic import listen_config
from .playback import CLIENT_LEAD, Speaking
from .wyoming_io import (
    MAX_LINE,
    SAMPLES_PER_CHUNK,
    ProtocolError,
    check_format,
    read_event,
    write_event,
)

if TYPE_CHECKING:
    from ..core.bound import Bound
    from ..core.run import Event as RunEvent
    from ..core.run import RunResult

log = get_logger("harkd.satellite")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 5.0
#: a satellite must answer describe within this
INFO_TIMEOUT = 5.0


@dataclass(frozen=True)
class SatelliteConfig:
    """A ``satellite`` trigger's options (validated by :mod:`harkd.triggers.satellite`)."""

    uris: tuple[str, ...]
    listen: ListenConfig
    backoff_max: float = BACKOFF_MAX


def config_of(params: dict[str, Any]) -> SatelliteConfig:
    uri = params["uri"]
    uris = (uri,) if isinstance(uri, str) else tuple(uri)
    options = {k: v for k, v in params.items()
               if k in ("vad", "wake", "barge_in", "mode", "clean")}
    from ..durations import seconds

    return SatelliteConfig(uris, listen_config(options),
                           seconds(params.get("backoff_max", BACKOFF_MAX)))


async def drive_satellites(bound: Bound, params: dict[str, Any],
                           started: Callable[[], None],
                           live: dict[str, SatelliteLink]) -> None:
    """Keep a link to every satellite of the trigger until cancelled."""
    from .models import whisper

    config = config_of(params)
    links = [SatelliteLink(bound, uri, config) for uri in config.uris]
    for link in links:
        live[link.uri] = link
    # Load Whisper now, not at the first utterance (it is shared: this is once per daemon).
    bound.services.spawn(whisper(bound.services))
    started()
    try:
        await asyncio.gather(*(link.run() for link in links))
    finally:
        for link in links:
            live.pop(link.uri, None)


class SatelliteLink:
    """The connection to one satellite, reconnected with backoff until cancelled."""

    def __init__(self, bound: Bound, uri: str, config: SatelliteConfig) -> None:
        self.bound = bound
        self.uri = uri
        self.config = config
        parts = urlsplit(uri)
        if parts.scheme != "tcp" or not parts.hostname or not parts.port:
            raise ValueError(f"satellite uri must be tcp://HOST:PORT (got {uri!r})")
        self.host, self.port = parts.hostname, parts.port
        self.name = uri
        self.connected = False
        self.connects = 0
        self.turns = 0
        #: audio chunks received, over all connections
        self.chunks = 0

    async def run(self) -> None:
        delay = BACKOFF_START
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(self.host, self.port,
                                                                   limit=MAX_LINE)
            except (OSError, TimeoutError) as exc:
                log.warning("satellite_connect_failed", pipeline=self.bound.name,
                            satellite=self.uri, error=f"{type(exc).__name__}: {exc}",
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
                continue
            self.connects += 1
            try:
                if await self._session(reader, writer):
                    delay = BACKOFF_START  # it worked for a while: reconnect quickly
            except ProtocolError as exc:
                log.warning("satellite_protocol_error", pipeline=self.bound.name,
                            satellite=self.uri, error=str(exc), retry_in=delay)
            except (ConnectionError, OSError) as exc:
                log.warning("satellite_connection_lost", pipeline=self.bound.name,
                            satellite=self.uri, error=f"{type(exc).__name__}: {exc}",
                            retry_in=delay)
            finally:
                self.connected = False
                writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.backoff_max)

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        """One connection: handshake, then audio until it ends. True if it got as far as
        streaming (so the next reconnect need not back off)."""
        await write_event(writer, Describe().event())
        async with asyncio.timeout(INFO_TIMEOUT):
            info = await self._info(reader)
        if info.satellite is not None and info.satellite.name:
            self.name = info.satellite.name
        conn = Connection(self, writer)
        await write_event(writer, RunSatellite().event())
        self.connected = True
        log.info("satellite_connected", pipeline=self.bound.name, satellite=self.uri,
                 name=self.name, area=info.satellite.area if info.satellite else None)
        streamed = False
        worker = asyncio.create_task(conn.listener.serve(), name=f"satellite:{self.uri}")
        try:
            while (event := await read_event(reader)) is not None:
                streamed = conn.receive(event) or streamed
            log.warning("satellite_disconnected", pipeline=self.bound.name,
                        satellite=self.uri, mid_utterance=conn.listener.endpointer.in_speech)
        finally:
            worker.cancel()
            conn.listener.cancel_runs()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        return streamed

    async def _info(self, reader: asyncio.StreamReader) -> Info:
        while (event := await read_event(reader)) is not None:
            if Info.is_type(event.type):
                return Info.from_event(event)
        raise ConnectionError("the satellite closed the connection before its info")


class Connection:
    """One live connection's listener, audio conversion and reply path."""

    def __init__(self, link: SatelliteLink, writer: asyncio.StreamWriter) -> None:
        self.link = link
        self.writer = writer
        self.framer = Framer()
        self.resampler: Resampler | None = None
        self.format: tuple[int, int] | None = None
        self.bad_format = False
        trigger = {"kind": "satellite", "satellite": link.uri, "name": link.name,
                   "session": f"satellite:{link.name}"}
        self.out: SatelliteOut | None = None
        self.listener = Listener(link.bound, link.config.listen, trigger, emit=self.emit,
                                 audio_out=self._new_out, finished=self.finished)

    def _new_out(self) -> SatelliteOut:
        """The reply path of a run that starts now. The satellite's speaker is started
        (``audio-start``) at once, so that it is ready while harkd transcribes and
        thinks rather than after: a satellite starts its speaker program on
        ``audio-start``, and that takes tens of milliseconds."""
        self.out = SatelliteOut(self.send)
        steps = self.link.bound.pipeline.steps
        if steps and steps[-1].kind in ("tts", "play"):  # it will speak
            self._later(self.out.prime())
        return self.out

    async def send(self, event: Event) -> None:
        if not self.writer.is_closing():
            await write_event(self.writer, event)

    def receive(self, event: Event) -> bool:
        """Take one event from the satellite; True if it was audio."""
        if AudioChunk.is_type(event.type):
            self.link.chunks += 1
            self._audio(event)
            return True
        if AudioStart.is_type(event.type):
            self.framer = Framer()
        elif AudioStop.is_type(event.type):
            self.listener.stop()
        elif event.type == "run-pipeline":
            log.info("satellite_pipeline", satellite=self.link.uri,
                     start=event.data.get("start_stage"), end=event.data.get("end_stage"))
        else:
            log.debug("satellite_event", satellite=self.link.uri, type=event.type)
        return False

    def _audio(self, event: Event) -> None:
        chunk = AudioChunk.from_event(event)
        try:
            check_format(chunk.rate, chunk.width, chunk.channels)
        except ProtocolError as exc:
            if not self.bad_format:
                self.bad_format = True
                log.warning("satellite_bad_audio", satellite=self.link.uri, error=str(exc))
                self._later(self.send(Error(text=str(exc), code="audio-format").event()))
            return
        fmt = (chunk.rate, chunk.channels)
        if fmt != self.format or self.resampler is None:
            self.format = fmt
            self.resampler = Resampler(chunk.rate, chunk.channels)
        for frame in self.framer.push(self.resampler.push(chunk.audio)):
            self.listener.feed(frame)

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.listener.runs.add(task)
        task.add_done_callback(self.listener.runs.discard)

    async def emit(self, event: RunEvent) -> None:
        if event.get("type") == "transcript":
            await self.send(Transcript(text=str(event.get("text", ""))).event())

    async def finished(self, result: RunResult) -> None:
        self.link.turns += 1
        out, self.out = self.out, None
        if out is not None and not out.ended:  # primed, but the run spoke nothing
            await out.end(False)
        if not result.ok:
            await self.send(Error(text=result.error or "run failed", code="run").event())


class SatelliteOut:
    """Speech to a satellite's speaker: ``audio-start``, chunks at real-time pace (a
    little ahead, so an interruption leaves little queued there), ``audio-stop``."""

    def __init__(self, send: Callable[[Event], Any]) -> None:
        self._send = send
        self._t0 = 0.0
        self._sent = 0.0
        self.started = False
        self.ended = False

    async def prime(self, rate: int = 22050) -> None:
        """Send ``audio-start`` ahead of the audio. Each chunk carries its own rate, which
        the satellite converts from, so a guess of the rate does no harm."""
        if not self.started:
            self.started = True
            await self._send(AudioStart(rate=rate, width=2, channels=1).event())

    async def begin(self, rate: int) -> None:
        await self.prime(rate)
        self._t0 = time.monotonic()
        self._sent = 0.0

    async def write(self, audio: Audio, speaking: Speaking) -> None:
        step = SAMPLES_PER_CHUNK * 2
        for i in range(0, len(audio.pcm), step):
            if speaking.interrupted:
                return
            ahead = self._t0 + self._sent - time.monotonic()
            if ahead > CLIENT_LEAD:
                await asyncio.sleep(ahead - CLIENT_LEAD)
            block = audio.pcm[i:i + step]
            speaking.note(block, audio.rate)
            await self._send(AudioChunk(rate=audio.rate, width=2, channels=1,
                                        audio=block).event())
            self._sent += len(block) / 2 / audio.rate
        if self._t0 + self._sent < time.monotonic():
            self._t0, self._sent = time.monotonic(), 0.0

    async def end(self, interrupted: bool) -> None:
        if self.started and not self.ended:
            self.ended = True
            await self._send(AudioStop().event())
