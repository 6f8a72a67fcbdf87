"""``harkd talk``: a terminal client for a pipeline's WebSocket on a running daemon.

Text mode sends each line typed (JSON when it parses, else text) as one run's input and
prints the streamed ``delta`` text as it comes, then the result (or the error). Microphone
mode (``--mic``) streams 16 kHz s16le PCM from the default input device to an audio-mode
pipeline, prints transcripts and replies, and plays the reply audio. Both speak harkd's
WebSocket protocol through the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, TextIO

from .errors import HarkError
from .records import dataclass

#: how long one run may take before ``harkd talk`` gives up waiting for its result
RUN_TIMEOUT = 300.0


class TalkError(HarkError):
    """The pipeline cannot be talked to (not found, not a WebSocket, refused). Raised by
    :func:`endpoint` and :func:`talk_text`."""


@dataclass(frozen=True)
class Endpoint:
    """Where a pipeline's WebSocket is, and in which mode it talks."""

    url: str
    mode: str
    headers: dict[str, str]


def endpoint(base: str, name: str, token: str | None) -> Endpoint:
    """Ask the daemon at ``base`` (``http://HOST:PORT``) where pipeline ``name`` listens."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{base}/api/pipelines/{name}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            info = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise TalkError(f"{base} says {exc.code} for pipeline {name!r}") from None
    except OSError as exc:
        raise TalkError(f"no daemon answers at {base}: {exc}") from None
    trigger = info.get("trigger") or {}
    if trigger.get("kind") != "websocket":
        raise TalkError(f"pipeline {name!r} has a {trigger.get('kind')} trigger, not a "
                        "websocket one; use harkd invoke or POST to its webhook")
    return Endpoint("ws" + base.removeprefix("http") + trigger.get("path", f"/ws/{name}"),
                    str(trigger.get("mode", "text")), headers)


async def lines_from(stream: TextIO, prompt: str | None) -> AsyncIterator[str]:
    """Lines of ``stream``, read in a thread so the event loop keeps receiving."""
    while True:
        if prompt:
            print(prompt, end="", flush=True, file=sys.stderr)
        line = await asyncio.to_thread(stream.readline)
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


async def talk_text(ep: Endpoint, lines: AsyncIterator[str], out: TextIO) -> int:
    """Send each line as one run; print deltas, then the result. 0 if every run succeeded."""
    failed = 0
    async with await _connect(ep) as ws:
        async for line in lines:
            await ws.send(line)
            async with asyncio.timeout(RUN_TIMEOUT):
                failed += not await _one_reply(ws, out)
    return 1 if failed else 0


async def _connect(ep: Endpoint) -> Any:
    """Open the pipeline's WebSocket; a refusal or a failure to connect is a TalkError."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        return await connect(ep.url, additional_headers=ep.headers, max_size=None)
    except InvalidStatus as exc:
        raise TalkError(f"{ep.url} refused the connection "
                        f"({exc.response.status_code})") from None
    except (InvalidHandshake, OSError) as exc:
        raise TalkError(f"cannot connect to {ep.url}: {exc}") from None


async def _one_reply(ws: Any, out: TextIO) -> bool:
    streamed = False
    while True:
        msg = json.loads(await ws.recv())
        kind = msg.get("type")
        if kind == "delta":
            out.write(msg["text"])
            out.flush()
            streamed = True
        elif kind == "result":
            output = msg.get("output")
            if streamed:
                out.write("\n")
            elif isinstance(output, str):
                out.write(output + "\n")
            else:
                out.write(json.dumps(output, ensure_ascii=False) + "\n")
            out.flush()
            return True
        elif kind == "error":
            if streamed:
                out.write("\n")
            print(f"error: {msg.get('message')}", file=sys.stderr)
            return False


async def talk_mic(ep: Endpoint, out: TextIO, *, turns: int | None = None,
                   device: str | int | None = None) -> int:
    """Stream the microphone to an audio-mode pipeline; print transcripts and replies and
    play reply audio on the default output. Ends after ``turns`` results (never when
    None) or when the daemon closes the connection."""
    from websockets.exceptions import ConnectionClosed

    from .voice.capture import Capture
    from .voice.frames import RATE

    capture = Capture(device)
    await asyncio.to_thread(capture.open, asyncio.get_running_loop())
    failed = 0
    try:
        async with await _connect(ep) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
            print(f"listening on {capture.describe()}; speak (Ctrl-C to stop)",
                  file=sys.stderr)

            async def send() -> None:
                async for frame, _ in capture.frames():
                    await ws.send(frame)

            sender = asyncio.create_task(send())
            try:
                failed = await _replies(ws, out, turns)
            except ConnectionClosed:
                pass
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    finally:
        await asyncio.to_thread(capture.close)
    return 1 if failed else 0


async def _replies(ws: Any, out: TextIO, turns: int | None) -> int:
    """Print what an audio-mode pipeline sends and play its audio; count failed runs."""
    from .voice.frames import Audio
    from .voice.playback import DeviceOut, Speaking

    speaker: DeviceOut | None = None
    speaking = Speaking()
    rate, done, failed, streamed = 16000, 0, 0, False
    while turns is None or done < turns:
        raw = await ws.recv()
        if isinstance(raw, bytes):
            if speaker is not None:
                await speaker.write(Audio(raw, rate), speaking)
            continue
        msg = json.loads(raw)
        kind = msg.get("type")
        if kind == "transcript":
            out.write(f"you: {msg.get('text', '')}\n")
        elif kind == "delta":
            out.write(msg["text"])
            streamed = True
        elif kind == "audio":
            rate = int(msg.get("sample_rate", rate))
            speaker = DeviceOut(None)
            await speaker.begin(rate)
        elif kind == "audio_end" and speaker is not None:
            await speaker.end(False)
            speaker = None
        elif kind in ("result", "error"):
            done += 1
            if streamed:
                out.write("\n")
            streamed = False
            if kind == "error":
                failed += 1
                print(f"error: {msg.get('message')}", file=sys.stderr)
            elif not isinstance(msg.get("output"), dict):
                out.write(f"harkd: {msg.get('output')}\n")
        out.flush()
    return failed
