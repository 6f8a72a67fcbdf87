"""Running steps: one list of steps on a value, each with its record, ``when``,
``retry`` and ``on_error``, nested lists (``map``, ``parallel``, ``switch``) included.

:class:`~harkd.core.bound.Bound` is the run boundary around this; the values of a run are
in :mod:`harkd.core.run`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from ..contracts import Step
from ..errors import HarkError, RunError
from ..logs import get_logger
from ..secrets import REDACTOR
from ..streams import TextStream
from .pipeline import Steps, StepSpec
from .run import CURRENT_STEP, Event, EventSink, Run, StepRecord

log = get_logger("harkd.run")


async def execute(run: Run) -> Any:
    """Run every step of ``run.pipeline`` in order; return the last output."""
    # run_steps(run, run.pipeline.steps, run.input) without its frame: every run's path
    steps = run.pipeline.steps
    data = run.input
    last = len(steps) - 1
    for i, spec in enumerate(steps):
        data = await _step(run, spec, data, "", steps[i + 1].step if i < last else None, False)
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
    token = CURRENT_STEP.set(record)
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
            CURRENT_STEP.reset(token)  # the handler's steps are not part of this one
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
            CURRENT_STEP.reset(token)


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
