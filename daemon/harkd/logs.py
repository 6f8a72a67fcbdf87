"""Structured logging: snake_case events with key-value fields, JSON or console.

``log = get_logger("harkd.part")`` at a module's top, then ``log.info("event_name",
key=value)``; :func:`configure` (the CLI calls it once) chooses the level, the format and
the stream. A line is made as structlog makes one, in the same order and with the same
keys (the fields, ``event``, the run's fields, ``level``, ``timestamp``, ``exception``),
without importing structlog: its import was 46M instructions, 3% of a start. Every line
passes through the secret redactor. A run sets :data:`RUN` (one context
variable), so every line a step logs carries its ``pipeline``, ``run_id`` and ``trigger``. The last
:data:`TAIL_SIZE` lines also go to :data:`TAIL`, which the console's live log reads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TextIO

from .secrets import MASK, REDACTOR
from .values import text_encoder

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


#: the run whose task is logging, as ``(pipeline, run_id, trigger)``: one context variable
#: set per run
RUN: contextvars.ContextVar[tuple[str, str, str | None] | None] = contextvars.ContextVar(
    "harkd_run_fields", default=None)


def merge_run(event: MutableMapping[str, Any]) -> None:
    """Add the running run's ``pipeline``, ``run_id`` and ``trigger`` to a line (a key the
    line sets itself wins)."""
    fields = RUN.get()
    if fields is not None:
        event.setdefault("pipeline", fields[0])
        event.setdefault("run_id", fields[1])
        event.setdefault("trigger", fields[2])


#: the level :func:`configure` set; until it runs every level is on
LEVEL = logging.DEBUG


def enabled(level: int) -> bool:
    """Whether lines of ``level`` are written: a hot path skips building one that is not."""
    return level >= LEVEL


def _redact(event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    pattern = REDACTOR.pattern
    if pattern is None:  # no secret known yet: nothing to copy
        return event
    return {k: pattern.sub(MASK, v) if isinstance(v, str) else v for k, v in event.items()}


#: what a kept line holds as is (anything else as its str())
_PLAIN = (str, int, float, bool, type(None))


TAIL_SIZE = 1000


class LogTail:
    """Keeps the latest log lines in a bounded ring buffer (each line written is given to
    it, redacted, before it is rendered).

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

    def __call__(self, event: Mapping[str, Any]) -> None:
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


#: a line as ``json.dumps(event, default=repr)`` writes it, without making an encoder a
#: line
_JSON = text_encoder(repr, ascii=True, separators=(", ", ": "))

_COLORS = {"debug": "\x1b[32m", "info": "\x1b[32m", "warning": "\x1b[33m",
           "error": "\x1b[31m"}
_RESET, _KEY, _BOLD = "\x1b[0m", "\x1b[36m", "\x1b[1m"


def _console(event: MutableMapping[str, Any], colors: bool) -> str:
    """A line for a person at a terminal: time, level, event, then the fields sorted by
    name (strings as they are, anything else as its repr), then the traceback if any."""
    stamp, level = event.pop("timestamp", ""), event.pop("level", "")
    name, exc = str(event.pop("event", "")), event.pop("exception", None)
    fields = " ".join(f"{_KEY}{k}{_RESET}={v if isinstance(v, str) else repr(v)}" if colors
                      else f"{k}={v if isinstance(v, str) else repr(v)}"
                      for k, v in sorted(event.items()))
    head = (f"{stamp} [{_COLORS.get(level, '')}{level:<9}{_RESET}] {_BOLD}{name:<30}{_RESET}"
            if colors else f"{stamp} [{level:<9}] {name:<30}")
    line = f"{head} {fields}" if fields else head.rstrip()
    return f"{line}\n{exc}" if exc else line


#: the last second a line was stamped in, and its text (``strftime`` was a quarter of
#: what writing a line cost)
_SECOND: tuple[int, str] = (0, "")


def _timestamp() -> str:
    """Now in UTC, as ISO 8601 with microseconds and a Z (what structlog's stamper wrote)."""
    global _SECOND
    now = time.time()
    seconds = int(now)
    if _SECOND[0] != seconds:
        _SECOND = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_SECOND[1]}.{int((now - seconds) * 1e6):06d}Z"


def _exception(exc_info: Any) -> str:
    """The traceback of ``exc_info`` (True: the exception being handled) as text."""
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return ""
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # closed
        return False


class _Output:
    """Where lines go and how they look: what :func:`configure` sets."""

    def __init__(self, fmt: str, stream: TextIO | None) -> None:
        self.stream = stream  # None: sys.stdout at the time of each line
        tty = _isatty(stream or sys.stdout)
        self.console = fmt == "console" or (fmt == "auto" and tty)
        self.colors = self.console and tty
        self._lock = threading.Lock()

    def __call__(self, level: str, event: MutableMapping[str, Any]) -> None:
        event["level"] = level
        event["timestamp"] = _timestamp()
        exc_info = event.pop("exc_info", None)
        if exc_info:
            text = _exception(exc_info)
            if text:
                event["exception"] = text
        event = _redact(event)
        TAIL(event)
        line = _console(event, self.colors) if self.console else _JSON(event)
        out = self.stream or sys.stdout
        if out is None:  # a process started without standard streams: nowhere to write
            return
        with self._lock:  # a line in one write(2)
            out.write(line + "\n")
            out.flush()


#: what a line goes to after its run's fields are added: an :class:`_Output`, or a
#: capture's list appender; the first ``configure`` replaces the default (console lines
#: of every level to standard output, as an unconfigured structlog writes them)
_SINK: Callable[[str, MutableMapping[str, Any]], None] = _Output("console", None)
#: whether :func:`configure` has been called (then :class:`harkd.runtime.Harkd`, used as a
#: library, leaves the configuration alone)
CONFIGURED = False


def _emit(level: str, event: str, fields: dict[str, Any]) -> None:
    fields["event"] = event
    merge_run(fields)
    _SINK(level, fields)


class Logger:
    """A module's logger: ``log.info("event_name", key=value)``. A line below the level
    :func:`configure` set is not made; one of a level that is on goes to the configured
    output. ``exception`` is ``error`` with the traceback being handled."""

    __slots__ = ()

    def debug(self, event: str, **fields: Any) -> None:
        if LEVEL <= logging.DEBUG:
            _emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        if LEVEL <= logging.INFO:
            _emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        if LEVEL <= logging.WARNING:
            _emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        if LEVEL <= logging.ERROR:
            _emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        if LEVEL <= logging.ERROR:
            fields.setdefault("exc_info", True)
            _emit("error", event, fields)


_LOGGER = Logger()


def get_logger(name: str = "harkd") -> Logger:
    """The logger of a module. Every module's is the same one: ``name`` tells a reader
    whose it is and is not written (events are named for what happened, not where)."""
    return _LOGGER


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set the level, the format (``json``, ``console``, or ``auto``: console on a
    terminal) and the stream (standard error) of every logger (the CLI calls this once)."""
    global LEVEL, _SINK, CONFIGURED
    LEVEL = LEVELS[level]
    _SINK = _Output(fmt, stream or sys.stderr)
    CONFIGURED = True


@contextlib.contextmanager
def configured(level: str = "info", fmt: str = "auto",
               stream: TextIO | None = None) -> Iterator[None]:
    """:func:`configure` for a block; the level and output before it come back after
    (:data:`CONFIGURED` stays true)."""
    global LEVEL, _SINK
    saved = LEVEL, _SINK
    configure(level, fmt, stream)
    try:
        yield
    finally:
        LEVEL, _SINK = saved


@contextlib.contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Lines as dicts instead of written, with the run's fields and a ``log_level`` (as
    structlog's ``capture_logs`` gives them); the level set before still filters."""
    global _SINK
    lines: list[dict[str, Any]] = []
    saved = _SINK

    def keep(level: str, event: MutableMapping[str, Any]) -> None:
        lines.append({**event, "log_level": level})

    _SINK = keep
    try:
        yield lines
    finally:
        _SINK = saved
