"""The ``wyoming`` trigger: harkd as a Wyoming server (speech to text, text to speech and
a conversation agent) for Home Assistant and other Wyoming clients.

``trigger: {wyoming: {listen: 127.0.0.1:10700}}`` opens a TCP listener of its own (the
Wyoming protocol is not HTTP). ``asr`` and ``tts`` use the daemon's shared Whisper and
Piper; ``handle`` runs this pipeline with the transcript text as input and answers with
its output as text. The Wyoming protocol has no authentication, so a listener off
loopback needs ``auth: none`` written out, as an http trigger does on a public listener.
The server lives in :mod:`harkd.voice.wyoming_server`, imported when the trigger binds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import TriggerKind
from ..records import dataclass
from ..settings import is_loopback
from .http import error_response

if TYPE_CHECKING:
    from aiohttp import web

    from ..core.bound import Bound
    from ..core.pipeline import Build
    from ..voice.wyoming_server import ServerConfig

SERVES = ("asr", "tts", "handle")


@dataclass(frozen=True, eq=False)
class WyomingTrigger:
    """A compiled Wyoming listener."""

    host: str
    port: int
    serves: tuple[str, ...]
    max_connections: int
    max_audio: float
    audio_timeout: float
    idle_timeout: float
    kind: str = "wyoming"

    @property
    def routes(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "wyoming", "listen": f"{self.host}:{self.port}",
                "serves": list(self.serves)}

    def config(self) -> ServerConfig:
        from ..voice.wyoming_server import ServerConfig

        return ServerConfig(self.host, self.port, self.serves, self.max_connections,
                            self.max_audio, self.audio_timeout, self.idle_timeout)

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        from ..voice.wyoming_server import serve_wyoming

        await serve_wyoming(bound, self.config(), started)

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse:
        return error_response(404, "a wyoming trigger has no HTTP routes")


def split_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"write HOST:PORT, e.g. 127.0.0.1:10700 (got {value!r})")
    return host.strip("[]"), int(port)


PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["listen"],
    "properties": {
        "listen": {"type": "string", "pattern": "^\\S+:\\d+$",
                   "description": "HOST:PORT of the Wyoming listener (10700 is usual)."},
        "auth": {"const": "none",
                 "description": "Wyoming has no authentication: off loopback, write "
                                "auth: none to let anyone who reaches the port use it."},
        "serve": {"type": "array", "uniqueItems": True, "minItems": 1,
                  "items": {"enum": list(SERVES)}, "default": list(SERVES),
                  "description": "What to offer: asr (Whisper), tts (Piper), handle "
                                 "(this pipeline as a conversation agent)."},
        "max_connections": {"type": "integer", "minimum": 1, "default": 16},
        "max_audio": {**durations.SCHEMA, "default": "30s",
                      "description": "Longest audio stream to transcribe; a longer one "
                                     "is refused with an error."},
        "audio_timeout": {**durations.SCHEMA, "default": "5s",
                          "description": "A stream with no event for this long (no "
                                         "audio-stop) is refused with an error."},
        "idle_timeout": {**durations.SCHEMA, "default": "5m",
                         "description": "An idle connection is closed after this."},
    },
}


def build(params: dict[str, Any], b: Build) -> WyomingTrigger:
    try:
        host, port = split_hostport(str(params.get("listen", "")))
    except ValueError as exc:
        b.error("listen", str(exc))
        host, port = "127.0.0.1", 10700
    if not is_loopback(host) and params.get("auth") != "none":
        b.error("listen", f"{host} is not a loopback address and the Wyoming protocol has "
                          "no authentication: write auth: none to serve anyone who can "
                          "reach the port")
    return WyomingTrigger(
        host=host,
        port=port,
        serves=tuple(params.get("serve") or SERVES),
        max_connections=int(params.get("max_connections", 16)),
        max_audio=b.seconds("max_audio", params.get("max_audio", "30s")),
        audio_timeout=b.seconds("audio_timeout", params.get("audio_timeout", "5s")),
        idle_timeout=b.seconds("idle_timeout", params.get("idle_timeout", "5m")),
    )


WYOMING = TriggerKind("wyoming", "A Wyoming protocol server (Home Assistant's speech to "
                      "text, text to speech and conversation agent).", PARAMS, build)
