"""Compiled pipelines and the small contracts that steps and triggers implement.

A :class:`Pipeline` is immutable: a reload builds a new one and swaps one reference, so a
run that started on a version finishes on it. :func:`compile_pipeline` turns validated
data into a :class:`Pipeline`, calling each kind's builder with a :class:`Build` context
that knows the file and the positions of every value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import templates
from .durations import seconds
from .errors import ConfigError, ConfigErrors, Position
from .registry import Registry
from .yamlfile import Positions, escape

if TYPE_CHECKING:
    from aiohttp import web

    from .engine import Bound, Run

STEP_META = ("as", "when")


class Step(Protocol):
    """A compiled step: awaited once per run with the previous step's output.

    It returns its output, or a :class:`~harkd.streams.TextStream` to pass chunks on as
    they come. A step whose ``accepts_stream`` attribute is true receives such a stream
    from the step before it instead of the joined text.
    """

    async def __call__(self, run: Run, data: Any) -> Any: ...


class Trigger(Protocol):
    """A compiled trigger.

    ``routes`` are the paths it answers on the shared listener; the daemon calls
    ``handle`` for requests on them. ``serve`` is long-lived work (a cron clock, a
    microphone): it runs from bind until it is cancelled at unbind, and calls
    ``started()`` once it is up. Route-only triggers call ``started()`` and return.
    """

    @property
    def kind(self) -> str: ...

    @property
    def routes(self) -> tuple[str, ...]: ...

    def describe(self) -> dict[str, Any]: ...

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse: ...

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None: ...


Mode = Literal["parallel", "queue", "single", "restart"]


@dataclass(frozen=True)
class Concurrency:
    """How many runs of one pipeline may run at once, and what happens past that."""

    max: int = 32
    mode: Mode = "parallel"
    queue: int = 128

    SCHEMA = {
        "type": "object",
        "additionalProperties": False,
        "description": "How many runs may run at once and what a further one does.",
        "properties": {
            "max": {"type": "integer", "minimum": 1, "default": 32,
                    "description": "Runs at once (single and restart imply 1)."},
            "mode": {"enum": ["parallel", "queue", "single", "restart"], "default": "parallel",
                     "description": "parallel: refuse past max (429); queue: wait in line "
                                    "(503 once the line is full); single: refuse while one "
                                    "runs (429); restart: cancel the running one."},
            "queue": {"type": "integer", "minimum": 0, "default": 128,
                      "description": "queue mode: how many runs may wait."},
        },
    }


@dataclass(frozen=True)
class StepSpec:
    """One compiled step and its ``as`` / ``when``."""

    kind: str
    step: Step
    pointer: str
    name: str | None = None
    when: templates.Renderable | None = None


@dataclass(frozen=True)
class Pipeline:
    """One version of one pipeline file, compiled."""

    name: str
    file: str
    trigger: Trigger
    steps: tuple[StepSpec, ...]
    description: str = ""
    concurrency: Concurrency = Concurrency()
    timeout: float | None = None
    allow_cloud: bool = True
    digest: str = ""
    version: int = 1
    loaded_at: float = field(default_factory=time.time)


@dataclass
class Build:
    """What a builder knows while it compiles one kind's parameters.

    Builders report problems with :meth:`error` (positions come from the file) and compile
    templates with :meth:`text`, :meth:`value` and :meth:`expression`.
    """

    name: str
    file: str
    positions: Positions
    pointer: str
    registry: Registry
    errors: list[ConfigError] = field(default_factory=list)
    #: free-form settings that builders may read (state folder, listener, ...)
    settings: dict[str, Any] = field(default_factory=dict)

    def at(self, key: str = "") -> Position:
        ptr = self.pointer + ("/" + escape(key) if key else "")
        return self.positions.at(ptr)

    def error(self, key: str, message: str) -> ConfigError:
        err = ConfigError(message, self.at(key))
        self.errors.append(err)
        return err

    def text(self, key: str, source: str) -> templates.Renderable:
        return self._compile(key, lambda: templates.text(source, self.at(key)))

    def expression(self, key: str, source: str) -> templates.Renderable:
        return self._compile(key, lambda: templates.expression(source, self.at(key)))

    def value(self, key: str, obj: Any) -> templates.Renderable:
        base = self.pointer + ("/" + escape(key) if key else "")
        return self._compile(key, lambda: templates.value(obj, self.positions.at, base))

    def seconds(self, key: str, value: Any) -> float:
        try:
            return seconds(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return 0.0

    def _compile(self, key: str, fn: Callable[[], templates.Renderable]) -> templates.Renderable:
        try:
            return fn()
        except ConfigError as exc:
            self.errors.append(exc)
            return templates.Constant(None)

    def child(self, pointer: str) -> Build:
        return Build(self.name, self.file, self.positions, pointer, self.registry,
                     self.errors, self.settings)


def normalise(kind_shorthand: str | None, raw: Any) -> dict[str, Any]:
    """The parameters of a kind as a dict, expanding the shorthand form."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if kind_shorthand is None:
        return {}
    return {kind_shorthand: raw}


def compile_pipeline(
    name: str,
    file: str,
    data: dict[str, Any],
    positions: Positions,
    registry: Registry,
    *,
    digest: str = "",
    settings: dict[str, Any] | None = None,
) -> Pipeline:
    """Compile validated pipeline data; raises ConfigErrors with every problem found."""
    root = Build(name, file, positions, "", registry, settings=settings or {})

    (trigger_name, trigger_raw), = data["trigger"].items()
    trigger_kind = registry.triggers[trigger_name]
    trigger = trigger_kind.build(normalise(None, trigger_raw),
                                 root.child(f"/trigger/{escape(trigger_name)}"))

    steps: list[StepSpec] = []
    for i, item in enumerate(data["steps"]):
        (kind_name,) = [k for k in item if k not in STEP_META]
        kind = registry.steps[kind_name]
        ptr = f"/steps/{i}"
        build = root.child(f"{ptr}/{escape(kind_name)}")
        step = kind.build(normalise(kind.shorthand, item[kind_name]), build)
        when = root.child(ptr).expression("when", str(item["when"])) if "when" in item else None
        steps.append(StepSpec(kind_name, step, ptr, item.get("as"), when))

    conc = data.get("concurrency") or {}
    mode: Mode = conc.get("mode", "parallel")
    concurrency = Concurrency(
        max=1 if mode in ("single", "restart") else int(conc.get("max", Concurrency.max)),
        mode=mode,
        queue=int(conc.get("queue", Concurrency.queue)),
    )
    timeout = root.seconds("timeout", data["timeout"]) if "timeout" in data else None

    if root.errors:
        raise ConfigErrors(root.errors)
    return Pipeline(
        name=name,
        file=file,
        trigger=trigger,
        steps=tuple(steps),
        description=data.get("description", ""),
        concurrency=concurrency,
        timeout=timeout,
        allow_cloud=bool(data.get("allow_cloud", True)),
        digest=digest,
    )
