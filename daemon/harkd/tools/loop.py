"""The tool loop: call the model, run the tools it asks for, send back their results,
until it answers in text or ``max_rounds`` is reached.

A tool that fails, times out, is unknown or gets malformed arguments does not fail the
run: its error becomes the tool's result, so the model can correct itself or explain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import durations
from ..errors import HarkError
from ..logs import get_logger
from ..records import dataclass
from ..secrets import REDACTOR
from .registry import Tool, ToolContext, invoke

if TYPE_CHECKING:
    from ..contracts import Router
    from ..router import ChatRequest, ChatResponse, ToolCall

log = get_logger("harkd.tools")

MAX_RESULT = 16_000
#: how much of a tool's arguments and result the run log keeps
LOGGED = 500
DEFAULT_ROUNDS = 5
DEFAULT_TIMEOUT = 10.0

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Settings of the tools llm steps may use.",
    "properties": {
        "timeout": {**durations.SCHEMA, "default": "10s",
                    "description": "Longest one tool call may take."},
        "max_rounds": {"type": "integer", "minimum": 1, "default": DEFAULT_ROUNDS},
        "http_get": {"type": "object", "additionalProperties": False, "properties": {
            "allow": {"type": "array", "items": {"type": "string"},
                      "description": "Hosts http_get may fetch (exact or *.example.com)."},
            "max_bytes": {"type": "integer", "minimum": 1}}},
        "read_file": {"type": "object", "additionalProperties": False, "properties": {
            "root": {"type": "string", "description": "The only folder read_file reads."},
            "max_bytes": {"type": "integer", "minimum": 1}}},
    },
    "additionalProperties": True,
}


@dataclass(frozen=True)
class ToolRun:
    """One tool call the loop made, for the run log (arguments and result cut to
    ``LOGGED`` characters)."""

    name: str
    ok: bool
    duration: float
    error: str | None = None
    arguments: str = ""
    result: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.name, "ok": self.ok,
                               "duration_ms": round(self.duration * 1000, 2)}
        if self.arguments:
            out["arguments"] = self.arguments[:LOGGED]
        if self.error:
            out["error"] = self.error
        else:
            out["result"] = self.result[:LOGGED]
        return out


@dataclass(frozen=True)
class LoopResult:
    """The final answer, the rounds it took and every tool call made."""

    response: ChatResponse
    rounds: int
    calls: tuple[ToolRun, ...]
    responses: tuple[ChatResponse, ...]


async def run_loop(router: Router, request: ChatRequest, tools: Mapping[str, Tool],
                   ctx: ToolContext, *, max_rounds: int = DEFAULT_ROUNDS,
                   timeout: float = DEFAULT_TIMEOUT) -> LoopResult:
    """Run the model with ``tools`` until it answers without calling one."""
    specs = tuple(t.spec() for t in tools.values())
    messages: list[Any] = list(request.messages)
    calls: list[ToolRun] = []
    responses: list[ChatResponse] = []
    for round_ in range(1, max_rounds + 1):
        resp = await router.complete(dataclasses.replace(
            request, messages=tuple(messages), tools=specs))
        responses.append(resp)
        if not resp.tool_calls:
            return LoopResult(resp, round_, tuple(calls), tuple(responses))
        messages.append({"role": "assistant", "content": resp.text or None,
                         "tool_calls": [c.as_message() for c in resp.tool_calls]})
        results = await asyncio.gather(*(_one(c, tools, ctx, timeout) for c in resp.tool_calls))
        for call, (content, record) in zip(resp.tool_calls, results, strict=True):
            calls.append(record)
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": content})
    # Out of rounds: ask for an answer with what the tools said, offering no more tools.
    log.info("tool_rounds_exhausted", rounds=max_rounds)
    messages.append({"role": "user", "content": "Answer now with the results you have."})
    resp = await router.complete(dataclasses.replace(request, messages=tuple(messages),
                                                     tools=()))
    responses.append(resp)
    return LoopResult(resp, max_rounds, tuple(calls), tuple(responses))


async def _one(call: ToolCall, tools: Mapping[str, Tool], ctx: ToolContext,
               timeout: float) -> tuple[str, ToolRun]:
    t0 = time.perf_counter()

    def failed(message: str) -> tuple[str, ToolRun]:
        message = REDACTOR(message)
        log.warning("tool_failed", tool=call.name, error=message)
        return (json.dumps({"error": message}),
                ToolRun(call.name, False, time.perf_counter() - t0, message,
                        REDACTOR(call.arguments or "")[:LOGGED]))

    t = tools.get(call.name)
    if t is None:
        return failed(f"unknown tool {call.name!r}; available: {', '.join(tools) or 'none'}")
    try:
        args = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return failed(f"arguments are not valid JSON: {exc.msg}")
    if not isinstance(args, dict):
        return failed("arguments must be a JSON object")
    try:
        result = await invoke(t, args, ctx, timeout)
    except TimeoutError:
        return failed(f"tool {call.name} timed out after {t.timeout or timeout:g}s")
    except TypeError as exc:
        return failed(f"bad arguments for {call.name}: {exc}")
    except HarkError as exc:
        return failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - a tool is plugin code; its bug is reported
        return failed(f"{call.name} failed: {type(exc).__name__}: {exc}")
    text = result if isinstance(result, str) else json.dumps(result, default=str,
                                                             ensure_ascii=False)
    if len(text) > MAX_RESULT:
        text = text[:MAX_RESULT] + "\n[truncated]"
    return text, ToolRun(call.name, True, time.perf_counter() - t0, None,
                         REDACTOR(call.arguments or "")[:LOGGED], REDACTOR(text[:LOGGED]))
