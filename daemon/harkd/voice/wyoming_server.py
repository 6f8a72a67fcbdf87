"""harkd as a Wyoming server: speech to text, text to speech, and a pipeline as a
conversation agent, for Home Assistant's Wyoming integration and any Wyoming client.

One TCP listener per ``wyoming`` trigger. Each connection is a :class:`Session` that
answers, event by event:

- ``describe`` → ``info`` (what this listener serves);
- ``transcribe`` (optional), ``audio-start``, ``audio-chunk``..., ``audio-stop`` →
  ``transcript``, with the shared Whisper;
- ``synthesize`` → ``audio-start``, ``audio-chunk``..., ``audio-stop``, with the shared
  Piper (voice ``espeak`` for espeak-ng), sentence by sentence;
- ``transcript`` (or ``handle`` text) → the pipeline runs with the text as input →
  ``handled`` with its output as text (``not-handled`` with the error if it failed);
- ``ping`` → ``pong``.

Limits: a header, data or payload over its size limit, or a line that is not JSON,
closes the connection (``wyoming_protocol_error``); an audio stream longer than
``max_audio``, in an unsupported format, or with no event for ``audio_timeout`` is
answered with ``error`` and closed; an idle connection is closed after ``idle_timeout``;
at most ``max_connections`` are open at once. None of this affects other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize

from ..logs import get_logger
from ..records import dataclass
from ..streams import from_text
from ..values import jsonable
from .frames import from_pcm, normalise
from .tts import sentences
from .wyoming_io import (
    MAX_LINE,
    AudioIn,
    ProtocolError,
    audio_events,
    check_format,
    info_event,
    read_event,
    write_event,
)

if TYPE_CHECKING:
    from ..core.bound import Bound

log = get_logger("harkd.wyoming")

_IDS = itertools.count(1)

#: how long a session refused for a protocol error reads and drops what the client still
#: sends before it closes
LINGER = 1.0


@dataclass(frozen=True)
class ServerConfig:
    """A ``wyoming`` trigger's options (validated by :mod:`harkd.triggers.wyoming`)."""

    host: str
    port: int
    serves: tuple[str, ...] = ("asr", "tts", "handle")
    max_connections: int = 16
    max_audio: float = 30.0
    audio_timeout: float = 5.0
    idle_timeout: float = 300.0
    language: str = "en"


async def serve_wyoming(bound: Bound, config: ServerConfig,
                        started: Callable[[], None]) -> None:
    """Listen until cancelled; each connection is a :class:`Session`."""
    sessions: set[asyncio.Task[Any]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(sessions) >= config.max_connections:
            log.warning("wyoming_refused", pipeline=bound.name, limit=config.max_connections)
            with contextlib.suppress(ConnectionError):
                await write_event(writer, Error(text="too many connections",
                                                code="busy").event())
            writer.close()
            return
        # The session is a task of its own, cancelled at unbind; the callback task that
        # asyncio made for this connection must not end cancelled (3.11 logs that).
        task = asyncio.create_task(Session(bound, config, reader, writer).serve())
        sessions.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        finally:
            sessions.discard(task)

    server = await asyncio.start_server(accept, config.host, config.port, limit=MAX_LINE)
    log.info("wyoming_listening", pipeline=bound.name, host=config.host, port=config.port,
             serves=list(config.serves))
    started()
    try:
        await asyncio.Future()  # until cancelled at unbind
    finally:
        server.close()
        for task in list(sessions):
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        await server.wait_closed()
        log.info("wyoming_closed", pipeline=bound.name, port=config.port)


class Session:
    """One Wyoming client connection."""

    def __init__(self, bound: Bound, config: ServerConfig, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.bound = bound
        self.config = config
        self.reader = reader
        self.writer = writer
        self.id = f"w{next(_IDS)}"
        peer = writer.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.audio: AudioIn | None = None
        self.language = config.language
        self.handled = 0

    async def serve(self) -> None:
        log.debug("wyoming_connected", pipeline=self.bound.name, session=self.id,
                  remote=self.remote)
        try:
            while True:
                waiting = self.config.audio_timeout if self.audio else self.config.idle_timeout
                try:
                    # Not asyncio.wait_for: on Python 3.11 it returns an event that
                    # completes in the loop pass where unbind cancels this session, and
                    # the session then goes on serving.
                    async with asyncio.timeout(waiting):
                        event = await read_event(self.reader)
                except TimeoutError:
                    if self.audio is not None:
                        raise ProtocolError(f"no audio-stop within "
                                            f"{self.config.audio_timeout:g}s of the last "
                                            "audio") from None
                    log.info("wyoming_idle", session=self.id)
                    return
                if event is None:
                    return
                await self.handle(event)
        except ProtocolError as exc:
            log.warning("wyoming_protocol_error", pipeline=self.bound.name, session=self.id,
                        remote=self.remote, error=str(exc))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send(Error(text=str(exc), code="protocol").event())
                await self._linger()
        except ConnectionError as exc:
            log.info("wyoming_connection_lost", session=self.id, error=str(exc))
        finally:
            self.writer.close()
            with contextlib.suppress(ConnectionError, RuntimeError):
                async with asyncio.timeout(1.0):
                    await self.writer.wait_closed()
            log.debug("wyoming_disconnected", session=self.id, handled=self.handled)

    async def send(self, event: Event) -> None:
        await write_event(self.writer, event)

    async def _linger(self) -> None:
        """End our side, then drop what the client still sends until it closes, for at
        most ``LINGER`` seconds: a socket closed with input unread is reset, and the reset
        can reach the client before the error it was just sent."""
        self.writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER):
                while await self.reader.read(MAX_LINE):
                    pass

    async def handle(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.send(info_event(self.bound.name, self.bound.pipeline.description,
                                       self.config.serves))
        elif Ping.is_type(kind):
            await self.send(Pong(text=event.data.get("text")).event())
        elif Transcribe.is_type(kind):
            self.language = Transcribe.from_event(event).language or self.config.language
        elif kind == "audio-start":
            self._serving("asr")
            start = AudioStart.from_event(event)
            check_format(start.rate, start.width, start.channels)
            self.audio = AudioIn(self.config.max_audio)
        elif kind == "audio-chunk":
            self._serving("asr")
            if self.audio is None:  # a chunk without a start: start implicitly
                self.audio = AudioIn(self.config.max_audio)
            self.audio.push(event)
        elif kind == "audio-stop":
            await self._transcribe()
        elif Synthesize.is_type(kind):
            self._serving("tts")
            await self._synthesize(Synthesize.from_event(event))
        elif Transcript.is_type(kind) or kind == "handle":
            self._serving("handle")
            await self._handle(event)
        else:
            log.debug("wyoming_event_ignored", session=self.id, type=kind)

    def _serving(self, what: str) -> None:
        if what not in self.config.serves:
            raise ProtocolError(f"this listener does not serve {what} "
                                f"(it serves {', '.join(self.config.serves)})")

    async def _transcribe(self) -> None:
        from .models import whisper

        audio_in, self.audio = self.audio, None
        if audio_in is None:
            return
        audio = audio_in.audio()
        model = await whisper(self.bound.services)
        result = await asyncio.to_thread(model.transcribe, normalise(from_pcm(audio.pcm)),
                                         language=self.language)
        log.info("wyoming_transcribed", pipeline=self.bound.name, session=self.id,
                 seconds=round(audio.seconds, 2), stt_ms=round(result.elapsed * 1000, 1),
                 text=result.text)
        # Whisper tiny.en transcribes English whatever language was asked for
        await self.send(Transcript(text=result.text, language="en").event())

    async def _synthesize(self, request: Synthesize) -> None:
        from .models import tts_engine

        voice = request.voice.name if request.voice is not None else None
        engine = await tts_engine(self.bound.services, "espeak" if voice == "espeak"
                                  else "piper")
        started = False
        seconds = 0.0
        async for sentence in sentences(from_text(request.text)):
            audio = await asyncio.to_thread(engine.synthesize, sentence)
            for ev in audio_events(audio, start=not started, stop=False):
                await self.send(ev)
            started = True
            seconds += audio.seconds
        if not started:  # nothing to say: an empty stream of the voice's format
            await self.send(AudioStart(rate=22050, width=2, channels=1).event())
        await self.send(AudioStop().event())
        log.info("wyoming_synthesized", session=self.id, chars=len(request.text),
                 seconds=round(seconds, 2))

    async def _handle(self, event: Event) -> None:
        text = event.data.get("text")
        if not isinstance(text, str):
            raise ProtocolError(f"{event.type} needs a text")
        context = event.data.get("context")
        conversation = context.get("conversation_id") if isinstance(context, dict) else None
        self.handled += 1
        trigger = {"kind": "wyoming", "remote": self.remote, "connection": self.id,
                   "session": conversation or self.id, "message": self.handled}
        result = await self.bound.run(self.bound.new_run(text, trigger))
        if result.ok:
            await self.send(Handled(text=text_of(result.output), context=context).event())
        else:
            await self.send(NotHandled(text=result.error, context=context).event())


def text_of(output: Any) -> str:
    """A run's output as the text a Wyoming peer shows or speaks."""
    if isinstance(output, str):
        return output
    text = getattr(output, "text", None)
    if isinstance(text, str):
        return text
    if output is None:
        return ""
    return json.dumps(output, ensure_ascii=False, default=jsonable)
