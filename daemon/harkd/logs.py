"""Structured logging: snake_case events with key-value fields, JSON or console.

Every line passes through the secret redactor. A run sets :data:`RUN` (one context
variable), so every line a step logs carries its ``pipeline``, ``run_id`` and ``trigger``. The last
:data:`TAIL_SIZE` lines also go to :data:`TAIL`, which the console's live log reads.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from .secrets import MASK, REDACTOR
from .values import text_encoder

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


#: the run whose task is logging, as ``(pipeline, run_id, trigger)``: one context variable
#: set per run (binding the three as structlog contextvars cost a run ten times as much)
RUN: contextvars.ContextVar[tuple[str, str, str | None] | None] = contextvars.ContextVar(
    "harkd_run_fields", default=None)


def merge_run(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add the running run's ``pipeline``, ``run_id`` and ``trigger`` to a line (a key the
    line sets itself wins, as with structlog's ``merge_contextvars``)."""
    fields = RUN.get()
    if fields is not None:
        event.setdefault("pipeline", fields[0])
        event.setdefault("run_id", fields[1])
        event.setdefault("trigger", fields[2])
    return event


#: the level :func:`configure` set; until it runs every level is on
LEVEL = logging.DEBUG


def enabled(level: int) -> bool:
    """Whether lines of ``level`` are written: a hot path skips building one that is not."""
    return level >= LEVEL


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    pattern = REDACTOR.pattern
    if pattern is None:  # no secret known yet: nothing to copy
        return event
    return {k: pattern.sub(MASK, v) if isinstance(v, str) else v for k, v in event.items()}


#: what a kept line holds as is (anything else as its str())
_PLAIN = (str, int, float, bool, type(None))


TAIL_SIZE = 1000


class LogTail:
    """A structlog processor that keeps the latest log lines in a bounded ring buffer.

    Each line is kept as a flat dict of JSON-safe values with a ``seq`` number; readers
    call :meth:`since` and wait with :meth:`wait` (from any event loop; lines may come from
    other threads, such as the run log's writer).
    """

    def __init__(self, size: int = TAIL_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        line = {k: v if isinstance(v, _PLAIN) else str(v) for k, v in event.items()}
        with self._lock:
            line["seq"] = next(self._seq)
            self.lines.append(line)
            waiters = list(self._waiters)
        for loop, ready in waiters:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that loop is closed
                with self._lock:
                    self._waiters.discard((loop, ready))
        return event

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The kept lines after ``seq``, oldest first."""
        with self._lock:
            return [line for line in self.lines if line["seq"] > seq]

    async def wait(self, seq: int, timeout: float) -> list[dict[str, Any]]:
        """Lines after ``seq``; waits up to ``timeout`` seconds for one if there are none."""
        ready = asyncio.Event()
        key = (asyncio.get_running_loop(), ready)
        with self._lock:
            self._waiters.add(key)
        try:
            lines = self.since(seq)
            if not lines:
                try:
                    async with asyncio.timeout(timeout):
                        await ready.wait()
                except TimeoutError:
                    return []
                lines = self.since(seq)
            return lines
        finally:
            with self._lock:
                self._waiters.discard(key)


#: the log lines of this process, for the console's live log
TAIL = LogTail()


def _fallback(obj: Any) -> Any:
    """What JSON cannot carry, as structlog's JSON renderer writes it."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


#: a line as ``json.dumps(event, default=_fallback)`` writes it (JSONRenderer's default
#: serializer), without making an encoder a line
_LINE = text_encoder(_fallback, ascii=True, separators=(", ", ": "))


def _json_line(event: Mapping[str, Any], **_: Any) -> str:
    return _LINE(event)


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog for the process (the CLI calls this once)."""
    global LEVEL
    LEVEL = LEVELS[level]
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=out.isatty()) if console
                     else structlog.processors.JSONRenderer(serializer=_json_line))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_run,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            TAIL,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(out),  # a line in one write(2)
        cache_logger_on_first_use=False,
    )
