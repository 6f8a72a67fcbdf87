"""The values of a run: :class:`Run` (what steps see), :class:`StepRecord` (one step's
timing and details, for the run log and metrics) and :class:`RunResult` (how it ended)."""

from __future__ import annotations

import contextvars
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any, Literal

from ..records import dataclass
from .pipeline import Pipeline

if TYPE_CHECKING:
    from ..contracts import Services

Event = dict[str, Any]
EventSink = Callable[[Event], Awaitable[None]]
Status = Literal["ok", "error", "cancelled", "busy"]
MAX_DEPTH = 8


async def discard(event: Event) -> None:
    """The event sink of a run nobody listens to."""
    return None


@dataclass(slots=True, eq=False)
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
CURRENT_STEP: contextvars.ContextVar[StepRecord | None] = contextvars.ContextVar(
    "harkd_step", default=None)


@dataclass(slots=True, eq=False)
class Run:
    """One execution of one pipeline version. Steps read ``input``, ``vars`` and ``trigger``
    through templates, record details on their :class:`StepRecord`, and ``emit`` events
    (``delta``, ``transcript``, audio) to the client that started the run."""

    id: str
    pipeline: Pipeline
    services: Services
    input: Any
    trigger: dict[str, Any]
    emit: EventSink = discard
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
        current = CURRENT_STEP.get()
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


@dataclass(slots=True, eq=False)
class RunResult:
    """How a run ended: its output, or its error and the HTTP status that fits it. Not
    changed once made (not frozen only because a frozen dataclass takes three times as
    long to make, and every run makes one)."""

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
