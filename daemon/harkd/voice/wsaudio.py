"""WebSocket audio mode: PCM frames in; transcripts, deltas and speech out.

The ``websocket`` trigger authenticates and prepares the connection, then hands it to
:func:`serve_audio`. The client sends binary frames of s16le mono PCM (16 kHz unless its
first message is ``{"type": "start", "sample_rate": N}``); a turn ends when VAD hears its
end or the client sends ``{"type": "stop"}``. Each turn is one run: the server sends
``transcript``, ``delta`` events, then ``{"type": "audio", "sample_rate": N, "format":
"s16le"}``, binary frames and ``{"type": "audio_end"}``, and the run's ``result`` or
``error``. ``{"type": "interrupt"}`` from the client stops the reply being spoken; the
server sends one when the user barges in, so the client drops what it has buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..logs import get_logger
from ..values import jsonable
from .frames import RATE, Framer, Resampler
from .listen import Listener
from .mic import listen_config
from .playback import ClientOut

if TYPE_CHECKING:
    from ..core.bound import Bound
    from ..core.run import RunResult

log = get_logger("harkd.voice")

MAX_RATE = 96000


class AudioConnection:
    """One audio-mode client. Sends are serialised so a JSON header and its binary frames
    are never interleaved with another message."""

    def __init__(self, ws: web.WebSocketResponse, bound: Bound, trigger: dict[str, Any],
                 params: Mapping[str, Any]) -> None:
        self.ws = ws
        self.bound = bound
        self.rate = int(params.get("sample_rate", RATE))
        self.framer = Framer()
        self.resampler = Resampler(self.rate)
        self.frames = 0
        self._lock = asyncio.Lock()
        options = {k: v for k, v in params.items()
                   if k in ("vad", "barge_in", "wake", "mode", "clean")}
        self.listener = Listener(bound, listen_config(options), {**trigger, "mode": "audio"},
                                 emit=self.send_json,
                                 audio_out=lambda: ClientOut(self.send_json, self.send_bytes),
                                 finished=self.finished)

    async def send_json(self, event: Any) -> None:
        if any(isinstance(v, bytes | bytearray) for v in event.values()):
            return
        async with self._lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(event, ensure_ascii=False, default=jsonable))

    async def send_bytes(self, data: Any) -> None:
        async with self._lock:
            if not self.ws.closed:
                await self.ws.send_bytes(data)

    async def finished(self, result: RunResult) -> None:
        from ..triggers.websocket import reply

        await self.send_json(reply(result))

    async def serve(self) -> None:
        worker = asyncio.create_task(self.listener.serve())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    self._audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._control(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            worker.cancel()
            self.listener.cancel_runs()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            log.debug("ws_audio_closed", pipeline=self.bound.name, frames=self.frames)

    def _audio(self, data: bytes) -> None:
        for frame in self.framer.push(self.resampler.push(data)):
            self.frames += 1
            self.listener.feed(frame)

    async def _control(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "start":
            rate = msg.get("sample_rate", RATE) if isinstance(msg, dict) else RATE
            if self.frames or not isinstance(rate, int) or not 8000 <= rate <= MAX_RATE:
                await self.send_json({"type": "error", "message": "start must come first "
                                      f"and give a sample_rate from 8000 to {MAX_RATE}"})
                return
            self.rate = rate
            self.resampler = Resampler(rate)
            self.framer = Framer()
        elif kind == "stop":
            self.listener.stop()
        elif kind == "interrupt":
            self.listener.interrupt("client")
        else:
            await self.send_json({"type": "error", "message": "audio mode takes binary PCM "
                                  "frames and start, stop or interrupt messages"})


async def serve_audio(ws: web.WebSocketResponse, bound: Bound, trigger: dict[str, Any],
                      params: Mapping[str, Any]) -> None:
    """Handle one prepared audio-mode connection until the client goes away."""
    await AudioConnection(ws, bound, trigger, params).serve()
