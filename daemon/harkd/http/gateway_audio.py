"""OpenAI's audio endpoints on the gateway, over the daemon's shared speech models.

``POST /v1/audio/transcriptions`` takes a multipart form with a WAV ``file`` (any rate,
8/16/32-bit, any channels) and answers ``{"text": ...}`` (``response_format`` ``json``,
``text`` or ``verbose_json``). ``POST /v1/audio/speech`` takes ``{"model", "input",
"voice", "response_format", "speed"}`` and answers a WAV (``wav``, the default here) or
raw 16-bit PCM (``pcm``). The ``model`` names are free: Whisper tiny.en and the Piper joe
voice serve every request (``voice: espeak`` or ``espeak:NAME`` picks espeak-ng). The
models are the ones pipelines use, loaded once per daemon; numpy and the models are
imported on the first request, so a daemon that never gets one never pays for them.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from ..logs import get_logger
from ..triggers.http import read_body
from .openai_errors import openai_error

if TYPE_CHECKING:
    from .host import Host

log = get_logger("harkd.gateway")

#: OpenAI's own cap on uploaded audio
MAX_UPLOAD = 25 * 1024 * 1024
MAX_INPUT = 4096
SPEECH_FORMATS = ("wav", "pcm")


def setup(app: web.Application, daemon: Host) -> None:
    """Add ``/v1/audio/transcriptions`` and ``/v1/audio/speech`` to the daemon's app."""
    audio = AudioGateway(daemon)
    app.router.add_post("/v1/audio/transcriptions", audio.transcriptions)
    app.router.add_post("/v1/audio/speech", audio.speech)


class AudioGateway:
    """The two handlers; the daemon's services hold the shared models."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon

    async def transcriptions(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return openai_error(400, "send multipart/form-data with a WAV file in 'file'")
        fields: dict[str, str] = {}
        wav: bytes | None = None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file":
                    wav = await _read_part(part, MAX_UPLOAD)
                elif part.name:
                    fields[part.name] = (await _read_part(part, 4096)).decode(
                        "utf-8", errors="replace")
        except _TooLarge:
            return openai_error(413, f"audio files are limited to {MAX_UPLOAD:,} bytes")
        except ValueError as exc:
            return openai_error(400, f"bad multipart body: {exc}")
        if wav is None:
            return openai_error(400, "the form has no 'file' field")
        try:
            from ..triggers.http import parse_audio
            from ..voice.frames import from_pcm, normalise
            from ..voice.models import whisper
        except ImportError:
            return openai_error(501, "speech to text needs harkd[voice]", "server_error")
        try:
            audio = parse_audio("audio/wav", wav)
        except ValueError as exc:
            return openai_error(400, f"{exc} (send a WAV file)")
        language = fields.get("language") or "en"
        model = await whisper(self.daemon.services)
        result = await asyncio.to_thread(model.transcribe, normalise(from_pcm(audio.pcm)),
                                         language=language, prompt=fields.get("prompt"))
        log.info("gateway_transcribed", seconds=round(audio.seconds, 2),
                 stt_ms=round(result.elapsed * 1000, 1))
        fmt = fields.get("response_format") or "json"
        if fmt == "text":
            return web.Response(text=result.text + "\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response({"task": "transcribe", "language": language,
                                      "duration": round(audio.seconds, 3),
                                      "text": result.text})
        if fmt != "json":
            return openai_error(400, f"response_format {fmt!r} is not supported "
                                     "(json, text or verbose_json)")
        return web.json_response({"text": result.text})

    async def speech(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await read_body(request, 64 * 1024))
        except web.HTTPRequestEntityTooLarge:
            return openai_error(413, "request body is too large")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return openai_error(400, f"body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return openai_error(400, "body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return openai_error(400, "input is required (the text to speak)")
        if len(text) > MAX_INPUT:
            return openai_error(400, f"input is limited to {MAX_INPUT} characters")
        fmt = body.get("response_format") or "wav"
        if fmt not in SPEECH_FORMATS:
            return openai_error(400, f"response_format {fmt!r} is not supported here "
                                     "(wav or pcm)")
        try:
            engine, options = _voice(body.get("voice"), body.get("speed"))
        except ValueError as exc:
            return openai_error(400, str(exc))
        try:
            from ..voice.frames import Audio
            from ..voice.models import tts_engine
        except ImportError:
            return openai_error(501, "text to speech needs harkd[voice]", "server_error")
        synth = await tts_engine(self.daemon.services, engine, **options)
        audio: Audio = await asyncio.to_thread(synth.synthesize, text)
        log.info("gateway_spoke", chars=len(text), seconds=round(audio.seconds, 2))
        if fmt == "pcm":
            return web.Response(body=audio.pcm, content_type="audio/pcm",
                                headers={"X-Sample-Rate": str(audio.rate)})
        return web.Response(body=audio.to_wav(), content_type="audio/wav")


def _voice(voice: Any, speed: Any) -> tuple[str, dict[str, Any]]:
    """The engine and options for an OpenAI ``voice`` name and ``speed``.

    OpenAI's voice names (alloy, echo, ...) all map to the Piper joe voice; ``espeak`` or
    ``espeak:en-gb`` picks espeak-ng.
    """
    if speed is not None and (not isinstance(speed, int | float) or not 0.25 <= speed <= 4):
        raise ValueError("speed must be a number from 0.25 to 4")
    name = voice if isinstance(voice, str) else ""
    if name == "espeak" or name.startswith("espeak:"):
        options: dict[str, Any] = {}
        if ":" in name:
            options["voice"] = name.split(":", 1)[1]
        if speed is not None and speed != 1:
            options["speed"] = max(80, min(450, round(175 * speed)))
        return "espeak", options
    if speed is not None and speed != 1:
        return "piper", {"length_scale": round(1 / float(speed), 3)}
    return "piper", {}


class _TooLarge(Exception):
    pass


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(65536):
        data += chunk
        if len(data) > limit:
            raise _TooLarge
    return bytes(data)
