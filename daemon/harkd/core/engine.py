"""Running pipelines: one :class:`Run` per trigger event, through a version's :class:`Bound`.

This is the run boundary: the only place that catches broadly. Whatever a step raises is
recorded on the run as its error, so a failing run never takes the daemon with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from .. import logs
from ..contracts import Step
from ..errors import Busy, HarkError, RunError, RunTimeout
from ..secrets import REDACTOR
from ..streams import TextStream
from .concurrency import RESTARTED, Gate
from .pipeline import Pipeline, Steps, StepSpec

if TYPE_CHECKING:
    from ..contracts import Services

log = structlog.get_logger("harkd.run")

Event = dict[str, Any]
EventSink = Callable[[Event], Awaitable[None]]
Status = Literal["ok", "error", "cancelled", "busy"]
MAX_DEPTH = 8


async def _discard(event: Event) -> None:
    return None


@dataclass
class StepRecord:
    """Timing and details of one step of one run, for the run log and metrics.

    ``path`` places nested steps: ``"2"`` is the third top-level step, ``"2.map[3].0"``
    the first sub-step of its fourth item; ``status`` is ``ok``, ``skipped``, ``error``,
    ``recovered`` (its ``on_error`` handled a failure) or ``cancelled``.
    """

    index: int
    kind: str
    name: str | None
    started: float
    duration: float = 0.0
    status: str = "ok"
    skipped: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            self.path = str(self.index)


#: the record of the step running in this task (branches of ``map`` and ``parallel`` run
#: in tasks of their own, so several steps of one run can be running at once)
_CURRENT: contextvars.ContextVar[StepRecord | None] = contextvars.ContextVar(
    "harkd_step", default=None)


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
    #: outputs of named steps to use instead of running them (``harkd test``'s ``steps:``)
    stubs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> StepRecord:
        """The record of the step that is running now (in this task)."""
        current = _CURRENT.get()
        return current if current is not None else self.steps[-1]

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


_RUN_PREFIX = uuid.uuid4().hex[:8]
_RUN_COUNTER = itertools.count(1)


def new_run_id() -> str:
    """16 hex digits: a random prefix per process, then a counter (cheaper than uuid4 per
    run, and unique across restarts because the prefix is new each time)."""
    return f"{_RUN_PREFIX}{next(_RUN_COUNTER):08x}"


async def execute(run: Run) -> Any:
    """Run every step of ``run.pipeline`` in order; return the last output."""
    data = await run_steps(run, run.pipeline.steps, run.input)
    if isinstance(data, TextStream):
        data = await data.text()
    return data


async def run_steps(run: Run, steps: Steps, data: Any, prefix: str = "", *,
                    keep_stream: bool = False) -> Any:
    """Run one list of steps on ``data`` and return the last output.

    ``prefix`` places the steps in the run log (``"2.map[3]."`` for the fourth item of the
    ``map`` at step 2). With ``keep_stream`` a streamed last output is returned as the
    stream (its chunks already reach the client), so a ``switch`` case that ends in a
    streaming ``llm`` still streams to the step after the ``switch``.
    """
    last = len(steps) - 1
    for i, spec in enumerate(steps):
        nxt = steps[i + 1].step if i < last else None
        data = await _step(run, spec, data, prefix, nxt, keep_stream and i == last)
    return data


async def _step(run: Run, spec: StepSpec, data: Any, prefix: str, nxt: Step | None,
                keep_stream: bool) -> Any:
    record = StepRecord(spec.index, spec.kind, spec.name, time.time(),
                        path=f"{prefix}{spec.index}")
    run.steps.append(record)
    token = _CURRENT.set(record)
    current = True
    t0 = time.perf_counter()
    try:
        if spec.when is not None and not spec.when.render(run.context(_plain(data))):
            record.skipped = True
            record.status = "skipped"
            return data
        if isinstance(data, TextStream) and not getattr(spec.step, "accepts_stream", False):
            data = await data.text()
        try:
            if spec.retry is None and not run.stubs:
                out = await spec.step(run, data)  # _attempts' common case, one await less
            else:
                out = await _attempts(run, spec, data, record)
        except Exception as exc:
            if spec.on_error is None:
                raise
            _CURRENT.reset(token)  # the handler's steps are not part of this one
            current = False
            out = await recover(run, spec.on_error, exc, spec.kind, data, record)
        if isinstance(out, TextStream):
            if not out.to_client:
                out.tap(_delta(run))
                out.to_client = True
            joined = nxt is None and not keep_stream
            if spec.name or joined or not getattr(nxt, "accepts_stream", False):
                out = await out.text()
        if spec.name:
            run.vars[spec.name] = out
        return out
    except asyncio.CancelledError:
        record.status = "cancelled"
        raise
    except BaseException:
        record.status = "error"
        raise
    finally:
        record.duration = time.perf_counter() - t0
        if current:
            _CURRENT.reset(token)


async def _attempts(run: Run, spec: StepSpec, data: Any, record: StepRecord) -> Any:
    if spec.name is not None and spec.name in run.stubs:
        record.detail["stubbed"] = True
        return run.stubs[spec.name]
    retry = spec.retry
    if retry is None:
        return await spec.step(run, data)
    attempt = 1
    while True:
        try:
            out = await spec.step(run, data)
        except Exception as exc:
            if attempt >= retry.attempts:
                raise
            message = error_message(exc)
            record.detail.setdefault("retried", []).append(message)
            log.info("step_retry", step=record.path, attempt=attempt, error=message)
            await asyncio.sleep(retry.wait(attempt))
            attempt += 1
        else:
            if attempt > 1:
                record.detail["attempts"] = attempt
            return out


async def recover(run: Run, on_error: Literal["continue"] | Steps, exc: Exception,
                  kind: str, data: Any, record: StepRecord) -> Any:
    """Handle a failed step (or ``parallel`` branch) by its ``on_error``.

    ``continue`` passes ``data`` on; a list of steps runs on
    ``{"error", "step", "input"}`` and its output replaces the failed one's.
    """
    message = error_message(exc)
    record.status = "recovered"
    record.detail["error"] = message
    log.info("step_recovered", step=record.path, error=message)
    if on_error == "continue":
        return data
    payload = {"error": message, "step": kind, "input": _plain(data)}
    out = await run_steps(run, on_error, payload, f"{record.path}.on_error.")
    return await out.text() if isinstance(out, TextStream) else out


def branch(run: Run) -> Run:
    """A view of ``run`` for one of several branches that run at once (``map`` items,
    ``parallel`` branches): its own copy of ``vars``, so ``as`` in one branch is not seen
    by another, and no ``delta`` events, so concurrent streams do not interleave at the
    client. Step records still go to the run's one list."""
    return dataclasses.replace(run, vars=dict(run.vars), emit=_without_deltas(run.emit))


def _without_deltas(emit: EventSink) -> EventSink:
    async def send(event: Event) -> None:
        if event.get("type") != "delta":
            await emit(event)

    return send


def error_message(exc: BaseException) -> str:
    """What a failure says on the run, the run log and an ``on_error`` handler."""
    if isinstance(exc, RunError):
        return REDACTOR(exc.message)
    if isinstance(exc, HarkError):
        return REDACTOR(str(exc))
    return REDACTOR(f"{type(exc).__name__}: {exc}")


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
        token = logs.RUN.set((self.pipeline.name, run.id, run.trigger.get("kind")))
        observers = self.services.observers
        for o in observers:
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
            for o in observers:
                o.run_finished(run, result)
            logs.RUN.reset(token)

    async def _admitted(self, run: Run, t0: float) -> RunResult:
        def done(status: Status, **kw: Any) -> RunResult:
            return RunResult(run.id, status, duration=time.perf_counter() - t0, **kw)

        if run.depth > MAX_DEPTH:
            return done("error", error=f"pipelines call each other more than {MAX_DEPTH} deep",
                        http_status=508)
        try:
            # The gate's enter/leave rather than its context manager: this is every run's path.
            held = await self.gate.enter()
            try:
                if self.pipeline.timeout is None:
                    output = await execute(run)
                else:
                    async with asyncio.timeout(self.pipeline.timeout):
                        output = await execute(run)
            finally:
                self.gate.leave(held)
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
            message = error_message(exc)
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=exc.status)
        except HarkError as exc:
            message = error_message(exc)
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=500)
        except Exception as exc:
            message = REDACTOR(f"internal error in step {_failed_step(run)}: "
                               f"{type(exc).__name__}: {exc}")
            log.exception("run_crashed", step=_failed_step(run))
            return done("error", error=message, http_status=500)
        duration = time.perf_counter() - t0
        # Each run is in the run log; a log line per good run would only cost throughput
        # (and building one that the level drops costs a run more than its record does).
        if logs.enabled(logging.DEBUG):
            log.debug("run_ok", duration_ms=round(duration * 1000, 2))
        return RunResult(run.id, "ok", output, duration=duration)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for this version's in-flight runs; True if all finished in time."""
        if not self.inflight:
            return True
        _, pending = await asyncio.wait(list(self.inflight), timeout=timeout)
        return not pending


def _failed_step(run: Run) -> str:
    """The innermost step that failed, by its run-log path: ``2.map[3].0 (http)``."""
    failed = [r for r in run.steps if r.status == "error"]
    if not failed:
        return "-" if not run.steps else f"{run.steps[-1].path} ({run.steps[-1].kind})"
    r = max(failed, key=lambda r: r.path.count("."))
    return f"{r.path} ({r.kind})"
