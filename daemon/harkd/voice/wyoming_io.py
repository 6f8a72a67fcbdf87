"""The Wyoming protocol on harkd's side: bounded event reading, audio conversion, and
the ``info`` harkd describes itself with.

A Wyoming event is a JSON header line, then ``data_length`` bytes of more JSON data, then
``payload_length`` bytes of payload (audio). The ``wyoming`` package's own reader trusts
both lengths; :func:`read_event` refuses a header over ``MAX_LINE``, data over
``MAX_DATA`` and a payload over ``MAX_PAYLOAD`` with :class:`ProtocolError`, so a peer
that sends garbage or one endless event costs a bounded amount of memory. Events are the
``wyoming`` package's :class:`~wyoming.event.Event` objects and are written with its writer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, async_write_event

from ..errors import HarkError
from .frames import RATE, Audio, Resampler

#: longest header line (the StreamReader's limit, so a longer one fails without buffering)
MAX_LINE = 64 * 1024
MAX_DATA = 64 * 1024
#: one audio chunk; clients send about 1,024 samples (2 KiB) at a time
MAX_PAYLOAD = 1024 * 1024
#: the audio formats accepted from a peer (rates outside this are refused, not resampled)
MIN_RATE, MAX_RATE = 8000, 48000
#: samples per chunk harkd sends (64 ms at 16 kHz, as Wyoming programs do)
SAMPLES_PER_CHUNK = 1024


class ProtocolError(HarkError, ValueError):
    """Raised by :func:`read_event` and :class:`AudioIn` when a Wyoming peer breaks the
    protocol or its limits; the connection is then closed (and a satellite reconnected)."""


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None at the end of the stream. Raises ProtocolError."""
    try:
        line = await reader.readline()
    except (ValueError, asyncio.LimitOverrunError):
        raise ProtocolError(f"event header longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        return None
    if not line:
        return None
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("event header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header has no type")
    data = header.get("data") or {}
    data_length = _length(header, "data_length", MAX_DATA)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise ProtocolError("event data is not a JSON object")
            data = {**data, **extra} if isinstance(data, dict) else extra
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("event data is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("event data is not a JSON object")
    return Event(type=header["type"], data=data, payload=payload)


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key) or 0
    if not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key} is not a length")
    if value > limit:
        raise ProtocolError(f"{key} {value} is over the limit of {limit} bytes")
    return value


async def write_event(writer: asyncio.StreamWriter, event: Event) -> None:
    await async_write_event(event, writer)


def check_format(rate: Any, width: Any, channels: Any) -> None:
    """Raise ProtocolError unless this is audio harkd accepts: 16-bit, 1 or 2 channels,
    ``MIN_RATE`` to ``MAX_RATE`` Hz."""
    if not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(f"unsupported sample rate {rate!r} (use {MIN_RATE} to "
                            f"{MAX_RATE} Hz)")
    if width != 2:
        raise ProtocolError(f"unsupported sample width {width!r} (use 2: 16-bit)")
    if channels not in (1, 2):
        raise ProtocolError(f"unsupported channel count {channels!r} (use 1 or 2)")


class AudioIn:
    """Audio chunks of one stream, converted to the internal format as they come.

    ``max_seconds`` bounds a stream whose end never comes: the chunk that passes it raises
    ProtocolError. A chunk in a format other than the stream's so far restarts the
    converter (Wyoming allows it; few peers do it).
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_bytes = int(max_seconds * RATE) * 2
        self.max_seconds = max_seconds
        self.pcm = bytearray()
        self._format: tuple[int, int] | None = None
        self._resampler: Resampler | None = None

    def push(self, event: Event) -> bytes:
        """Take an audio-chunk event; the converted PCM it added."""
        chunk = AudioChunk.from_event(event)
        check_format(chunk.rate, chunk.width, chunk.channels)
        fmt = (chunk.rate, chunk.channels)
        if fmt != self._format or self._resampler is None:
            self._format = fmt
            self._resampler = Resampler(chunk.rate, chunk.channels)
        pcm = self._resampler.push(chunk.audio)
        if len(self.pcm) + len(pcm) > self.max_bytes:
            raise ProtocolError(f"audio stream longer than {self.max_seconds:g}s")
        self.pcm += pcm
        return pcm

    def audio(self) -> Audio:
        return Audio(bytes(self.pcm))


def audio_events(audio: Audio, *, start: bool = True, stop: bool = True) -> list[Event]:
    """``audio`` as audio-start, audio-chunk events and audio-stop, 16-bit mono."""
    events: list[Event] = []
    if start:
        events.append(AudioStart(rate=audio.rate, width=2, channels=1).event())
    step = SAMPLES_PER_CHUNK * 2
    for i in range(0, len(audio.pcm), step):
        events.append(AudioChunk(rate=audio.rate, width=2, channels=1,
                                 audio=audio.pcm[i:i + step]).event())
    if stop:
        events.append(AudioStop().event())
    return events


def info_event(pipeline: str, description: str, serves: tuple[str, ...]) -> Event:
    """The ``info`` harkd answers ``describe`` with: what this listener serves."""
    from wyoming.info import (
        AsrModel,
        AsrProgram,
        Attribution,
        HandleModel,
        HandleProgram,
        Info,
        TtsProgram,
        TtsVoice,
    )

    from .. import __version__

    by = Attribution(name="harkd", url="https://pypi.org/project/harkd/")
    whisper = Attribution(name="OpenAI Whisper (faster-whisper)",
                          url="https://github.com/SYSTRAN/faster-whisper")
    piper = Attribution(name="Piper", url="https://github.com/OHF-Voice/piper1-gpl")
    info = Info()
    if "asr" in serves:
        info.asr = [AsrProgram(
            name="harkd-whisper", attribution=by, installed=True, version=__version__,
            description="Whisper tiny.en through harkd (offline)",
            models=[AsrModel(name="tiny.en", attribution=whisper, installed=True,
                             description="Whisper tiny.en, int8", version=None,
                             languages=["en"])])]
    if "tts" in serves:
        info.tts = [TtsProgram(
            name="harkd-piper", attribution=by, installed=True, version=__version__,
            description="Piper through harkd (offline)",
            voices=[TtsVoice(name="joe", attribution=piper, installed=True,
                             description="en_US joe (medium)", version=None,
                             languages=["en_US"]),
                    TtsVoice(name="espeak", attribution=by, installed=True,
                             description="espeak-ng (robotic, instant)", version=None,
                             languages=["en"])])]
    if "handle" in serves:
        info.handle = [HandleProgram(
            name="harkd", attribution=by, installed=True, version=__version__,
            description="harkd pipelines as a conversation agent",
            models=[HandleModel(name=pipeline, attribution=by, installed=True,
                                description=description or f"the {pipeline} pipeline",
                                version=None, languages=["en"])])]
    return info.event()
