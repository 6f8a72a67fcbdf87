"""The ``websocket`` step: send a message to a remote WebSocket and wait for its answer.

It connects with the ``websockets`` library (imported when the step first runs), sends
``send`` (the step's input by default; a mapping or list goes as JSON text), then reads
messages until ``until`` is true of one (by default the first message ends it). Each
message is parsed as JSON when it is JSON. The output is the last message read, or with
``collect: true`` the list of every message read. ``timeout`` bounds the whole exchange;
the connection is closed when the step ends, is cancelled or fails.

Another harkd's WebSocket trigger answers with ``delta`` messages and then a ``result``:
``until: "message.type in ['result', 'error']"`` waits for the run's end.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import StepKind
from ..errors import StepError
from ..records import dataclass
from ..secrets import REDACTOR

if TYPE_CHECKING:
    from ..core.pipeline import Build
    from ..core.run import Run
    from ..templates import Renderable

MAX_MESSAGE = 4 * 1024 * 1024
MAX_MESSAGES = 10_000


@dataclass(frozen=True, eq=False)
class WebSocketStep:
    """One exchange with a remote WebSocket; see the module docstring."""

    url: Renderable
    send: Renderable | None
    headers: Renderable
    until: Renderable | None
    collect: bool
    timeout: float

    async def __call__(self, run: Run, data: Any) -> Any:
        ctx = run.context(data)
        url = str(self.url.render(ctx))
        if not url.startswith(("ws://", "wss://")):
            raise StepError(f"websocket: url must start with ws:// or wss://, not {url!r}",
                            status=422)
        payload = self.send.render(ctx) if self.send is not None else data
        headers = {str(k): str(v) for k, v in (self.headers.render(ctx) or {}).items()}
        record = run.step
        record.detail["url"] = REDACTOR(url)
        run.services.check_network(f"websocket {url}")
        try:
            async with asyncio.timeout(self.timeout):
                messages = await self._exchange(run, url, headers, payload)
        except TimeoutError:
            raise StepError(f"websocket {url}: no answer within {self.timeout:g}s",
                            status=504) from None
        record.detail["received"] = len(messages)
        return messages if self.collect else messages[-1]

    async def _exchange(self, run: Run, url: str, headers: dict[str, str],
                        payload: Any) -> list[Any]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        messages: list[Any] = []
        try:
            async with connect(url, additional_headers=headers, max_size=MAX_MESSAGE,
                               open_timeout=None, user_agent_header="harkd") as ws:
                await ws.send(text)
                while len(messages) < MAX_MESSAGES:
                    raw = await ws.recv()
                    message = _parse(raw)
                    messages.append(message)
                    if self.until is None or self.until.render(
                            {**run.context(message), "message": message}):
                        return messages
        except ConnectionClosed as exc:
            if messages and self.until is None:
                return messages
            raise StepError(f"websocket {url}: the server closed the connection "
                            f"({exc.rcvd.code if exc.rcvd else 'no close frame'}) before "
                            "the answer" + (f" (after {len(messages)} message(s))"
                                            if messages else ""), status=502) from None
        except (InvalidHandshake, InvalidURI, OSError) as exc:
            raise StepError(f"websocket {url}: cannot connect: {exc}", status=502) from None
        raise StepError(f"websocket {url}: no message matched `until` in {MAX_MESSAGES} "
                        "messages", status=502)


def _parse(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _build(params: dict[str, Any], b: Build) -> WebSocketStep:
    return WebSocketStep(
        url=b.text("url", params["url"]),
        send=b.value("send", params["send"]) if "send" in params else None,
        headers=b.value("headers", params.get("headers") or {}),
        until=b.expression("until", str(params["until"])) if "until" in params else None,
        collect=bool(params.get("collect", False)),
        timeout=b.seconds("timeout", params.get("timeout", "30s")),
    )


WEBSOCKET = StepKind(
    "websocket",
    "Send a message to a remote WebSocket and wait for the answer: the first message, or "
    "the first for which `until` is true (all of them with `collect`).",
    {"type": "object", "additionalProperties": False, "required": ["url"],
     "properties": {
         "url": {"type": "string", "pattern": r"^(wss?://|\{)",
                 "description": "ws:// or wss:// URL (a template)."},
         "send": {"description": "What to send (default: the input); a mapping or list is "
                                 "sent as JSON text. String leaves are templates."},
         "headers": {"type": "object", "description": "Headers of the opening handshake."},
         "until": {"type": "string",
                   "description": "A Jinja expression over `message` (parsed JSON, or the "
                                  "text); reading stops at the first message for which it "
                                  "is true. Default: the first message."},
         "collect": {"type": "boolean", "default": False,
                     "description": "Output every message read, not only the last."},
         "timeout": {**durations.SCHEMA, "default": "30s",
                     "description": "The longest the whole exchange may take."},
     }},
    _build,
    shorthand="url",
    examples=({"url": "ws://127.0.0.1:8420/ws/echo", "send": {"name": "Ada"},
               "until": "message.type == 'result'"},),
)
