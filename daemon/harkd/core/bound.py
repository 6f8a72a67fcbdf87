"""The run boundary: a pipeline version bound to its trigger, through which every run
starts. It is the only place that catches broadly: whatever a step raises is recorded on
the run as its error, so a failing run never takes the daemon with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import logs
from ..errors import Busy, HarkError, RunError, RunTimeout
from ..secrets import REDACTOR
from .concurrency import RESTARTED, Gate
from .engine import error_message, execute
from .pipeline import Pipeline
from .run import MAX_DEPTH, EventSink, Run, RunResult, Status, discard, new_run_id

if TYPE_CHECKING:
    from ..contracts import Services

log = logs.get_logger("harkd.run")


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
            emit=emit or discard,
            depth=depth,
            streaming=streaming,
        )

    async def run(self, run: Run) -> RunResult:
        """Admit ``run`` through the gate, execute it, record and return how it ended.

        If the calling task is cancelled (the client went away, shutdown) the run is
        recorded as cancelled and the cancellation propagates.
        """
        # One frame for the whole boundary (admission, execution, the outcome, the
        # observers): every run passes here.
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
            if run.depth > MAX_DEPTH:
                result = RunResult(run.id, "error", error=f"pipelines call each other more than "
                                   f"{MAX_DEPTH} deep", http_status=508,
                                   duration=time.perf_counter() - t0)
                return result
            # The gate's admit/enter/leave rather than its context manager: this is every
            # run's path, and a free slot is taken without a coroutine (0.9 -> 0.2 us).
            gate = self.gate
            held = task if task is not None and gate.admit(task) else await gate.enter(task)
            try:
                if self.pipeline.timeout is None:
                    output = await execute(run)
                else:
                    async with asyncio.timeout(self.pipeline.timeout):
                        output = await execute(run)
            finally:
                gate.leave(held)
            duration = time.perf_counter() - t0
            # Each run is in the run log; a log line per good run would only cost throughput
            # (and building one that the level drops costs a run more than its record does).
            if logs.enabled(logging.DEBUG):
                log.debug("run_ok", duration_ms=round(duration * 1000, 2))
            result = RunResult(run.id, "ok", output, duration=duration)
            return result
        except Exception as exc:  # noqa: BLE001 - the run boundary: recorded on the run
            result = self._failed(run, exc, t0)
            return result
        except asyncio.CancelledError as exc:
            if exc.args and exc.args[0] == RESTARTED and task is not None:
                task.uncancel()
                log.info("run_restarted")
                result = RunResult(run.id, "cancelled", error="run was replaced by a newer run "
                                   "(restart mode)", http_status=409,
                                   duration=time.perf_counter() - t0)
                return result
            raise
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

    def _failed(self, run: Run, exc: Exception, t0: float) -> RunResult:
        """How a run that raised ``exc`` ended (logged here)."""
        def done(status: Status, **kw: Any) -> RunResult:
            return RunResult(run.id, status, duration=time.perf_counter() - t0, **kw)

        if isinstance(exc, Busy):
            log.info("run_refused", reason=exc.message, status=exc.status)
            return done("busy", error=exc.message, http_status=exc.status,
                        retry_after=exc.retry_after)
        if isinstance(exc, TimeoutError):
            log.warning("run_timeout", timeout=self.pipeline.timeout)
            return done("error", error=f"run timed out after {self.pipeline.timeout:g}s",
                        http_status=RunTimeout.status)
        if isinstance(exc, RunError):
            message = error_message(exc)
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=exc.status)
        if isinstance(exc, HarkError):
            message = error_message(exc)
            log.warning("run_failed", error=message, step=_failed_step(run))
            return done("error", error=message, http_status=500)
        message = REDACTOR(f"internal error in step {_failed_step(run)}: "
                           f"{type(exc).__name__}: {exc}")
        log.exception("run_crashed", step=_failed_step(run))
        return done("error", error=message, http_status=500)

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
