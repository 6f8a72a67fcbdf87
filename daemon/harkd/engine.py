"""Running pipelines: one :class:`Run` per trigger event, through a version's :class:`Bound`.

This is the run boundary: the only place that catches broadly. Whatever a step raises is
recorded on the run as its error, so a failing run never takes the daemon with it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

from .concurrency import RESTARTED, Gate
from .errors import Busy, HarkError, RunError, RunTimeout
from .pipeline import Pipeline
from .secrets import REDACTOR
from .streams import TextStream

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger("harkd.run")

Event = dict[str, Any]
EventSink = Callable[[Event], Awaitable[None]]
Status = Literal["ok", "error", "cancelled", "busy"]
MAX_DEPTH = 8


async def _discard(event: Event) -> None:
    return None


@dataclass
class StepRecord:
    """Timing and details of one step of one run, for the run log and metrics."""

    index: int
    kind: str
    name: str | None
    started: float
    duration: float = 0.0
    status: str = "ok"
    skipped: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One execution of one pipeline version. Steps read ``input``, ``vars`` and ``trigger``
    through templates, record details on their :class:`StepRecord`, and ``emit`` events
    (``delta``, ``transcript``, audio) to the client that started the run."""

    id: str
    pipeline: Pipeline
    services: Services
    input: Any
    trigger: dict[str, Any]
    emit: EventSink = _discard
    vars: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    steps: list[StepRecord] = field(default_factory=list)
    depth: int = 0
    #: whether the client can take streamed chunks (WebSocket, SSE); steps may stream anyway
    streaming: bool = False
    #: per-run scratch space for steps (an audio output, a session handle, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> StepRecord:
        """The record of the step that is running now."""
        return self.steps[-1]

    def context(self, data: Any = None) -> dict[str, Any]:
        """What templates see."""
        return {
            "input": data if data is not None else self.input,
            "vars": self.vars,
            "trigger": self.trigger,
            "run": {"id": self.id, "pipeline": self.pipeline.name, "input": self.input,
                    "version": self.pipeline.version, "started": self.started},
        }


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its output, or its error and the HTTP status that fits it."""

    run_id: str
    status: Status
    output: Any = None
    error: str | None = None
    http_status: int = 200
    duration: float = 0.0
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class RunObserver(Protocol):
    """Told of every run's start and end (the run log and metrics implement this)."""

    def run_started(self, run: Run) -> None: ...

    def run_finished(self, run: Run, result: RunResult) -> None: ...


_RUN_PREFIX = uuid.uuid4().hex[:8]
_RUN_COUNTER = itertools.count(1)


def new_run_id() -> str:
    """16 hex digits: a random prefix per process, then a counter (cheaper than uuid4 per
    run, and unique across restarts because the prefix is new each time)."""
    return f"{_RUN_PREFIX}{next(_RUN_COUNTER):08x}"


async def execute(run: Run) -> Any:
    """Run every step of ``run.pipeline`` in order; return the last output."""
    data: Any = run.input
    steps = run.pipeline.steps
    for index, spec in enumerate(steps):
        record = StepRecord(index, spec.kind, spec.name, time.time())
        run.steps.append(record)
        t0 = time.perf_counter()
        try:
            if spec.when is not None and not spec.when.render(run.context(_plain(data))):
                record.skipped = True
                record.status = "skipped"
                continue
            if isinstance(data, TextStream) and not getattr(spec.step, "accepts_stream", False):
                data = await data.text()
            out = await spec.step(run, data)
            if isinstance(out, TextStream):
                out.tap(_delta(run))
                last = index == len(steps) - 1
                nxt = steps[index + 1].step if not last else None
                if spec.name or not getattr(nxt, "accepts_stream", False):
                    out = await out.text()
            if spec.name:
                run.vars[spec.name] = out
            data = out
        except BaseException:
            record.status = "error"
            raise
        finally:
            record.duration = time.perf_counter() - t0
    if isinstance(data, TextStream):
        data = await data.text()
    return data


def _plain(data: Any) -> Any:
    return data.seen if isinstance(data, TextStream) else data


def _delta(run: Run) -> Callable[[str], Awaitable[None]]:
    async def send(chunk: str) -> None:
        await run.emit({"type": "delta", "text": chunk})

    return send


class Bound:
    """One pipeline version bound to its trigger: the handle triggers start runs through.

    Runs started here use this version even if a reload swaps in a newer one meanwhile.
    """

    def __init__(self, pipeline: Pipeline, gate: Gate, services: Services) -> None:
        self.pipeline = pipeline
        self.gate = gate
        self.services = services
        self.inflight: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return self.pipeline.name

    def new_run(
        self,
        data: Any,
        trigger: Mapping[str, Any],
        emit: EventSink | None = None,
        *,
        depth: int = 0,
        streaming: bool = False,
        run_id: str | None = None,
    ) -> Run:
        return Run(
            id=run_id or new_run_id(),
            pipeline=self.pipeline,
            services=self.services,
            input=data,
            trigger=dict(trigger),
            emit=emit or _discard,
            depth=depth,
            streaming=streaming,
        )

    async def run(self, run: Run) -> RunResult:
        """Admit ``run`` through the gate, execute it, record and return how it ended.

        If the calling task is cancelled (the client went away, shutdown) the run is
        recorded as cancelled and the cancellation propagates.
        """
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        t0 = time.perf_counter()
        tokens = structlog.contextvars.bind_contextvars(
            pipeline=self.pipeline.name, run_id=run.id, trigger=run.trigger.get("kind"))
        for o in self.services.observers:
            o.run_started(run)
        result: RunResult | None = None
        try:
            result = await self._admitted(run, t0)
            return result
        finally:
            if task is not None:
                self.inflight.discard(task)
            if result is None:
                log.info("run_cancelled")
                result = RunResult(run.id, "cancelled", error="run was cancelled",
                                   http_status=499, duration=time.perf_counter() - t0)
            for o in self.services.observers:
                o.run_finished(run, result)
            structlog.contextvars.reset_contextvars(**tokens)

    async def _admitted(self, run: Run, t0: float) -> RunResult:
        def done(status: Status, **kw: Any) -> RunResult:
            return RunResult(run.id, status, duration=time.perf_counter() - t0, **kw)

        if run.depth > MAX_DEPTH:
            return done("error", error=f"pipelines call each other more than {MAX_DEPTH} deep",
                        http_status=508)
        try:
            async with self.gate.slot():
                if self.pipeline.timeout is None:
                    output = await execute(run)
                else:
                    async with asyncio.timeout(self.pipeline.timeout):
                        output = await execute(run)
        except Busy as exc:
            log.info("run_refused", reason=exc.message, status=exc.status)
            return done("busy", error=exc.message, http_status=exc.status,
                        retry_after=exc.retry_after)
        except TimeoutError:
            log.warning("run_timeout", timeout=self.pipeline.timeout)
            return done("error", error=f"run timed out after {self.pipeline.timeout:g}s",
                        http_status=RunTimeout.status)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if exc.args and exc.args[0] == RESTARTED and task is not None:
                task.uncancel()
                log.info("run_restarted")
                return done("cancelled", error="run was replaced by a newer run (restart mode)",
                            http_status=409)
            raise
        except RunError as exc:
            message = REDACTOR(exc.message)
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=exc.status)
        except HarkError as exc:
            message = REDACTOR(str(exc))
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=500)
        except Exception as exc:
            message = REDACTOR(f"internal error in step {_failed_step(run)}: "
                               f"{type(exc).__name__}: {exc}")
            log.exception("run_crashed", step=_failed_step(run))
            return done("error", error=message, http_status=500)
        # Each run is in the run log; a log line per good run would only cost throughput.
        log.debug("run_ok", duration_ms=round((time.perf_counter() - t0) * 1000, 2))
        return done("ok", output=output)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for this version's in-flight runs; True if all finished in time."""
        if not self.inflight:
            return True
        _, pending = await asyncio.wait(list(self.inflight), timeout=timeout)
        return not pending


def _failed_step(run: Run) -> str:
    if not run.steps:
        return "-"
    r = run.steps[-1]
    return f"{r.index + 1} ({r.kind})"
