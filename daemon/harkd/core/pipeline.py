"""Compiled pipelines and the small contracts that steps and triggers implement.

A :class:`Pipeline` is immutable: a reload builds a new one and swaps one reference, so a
run that started on a version finishes on it. :func:`compile_pipeline` turns validated
data into a :class:`Pipeline`, calling each kind's builder with a :class:`Build` context
that knows the file and the positions of every value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field, replace
from typing import Any, Literal

from .. import durations, templates
from ..contracts import Step, Trigger
from ..durations import seconds
from ..errors import ConfigError, ConfigErrors, Position
from ..records import dataclass
from ..yamlfile import Positions, escape
from .registry import Registry

#: keys a step item may carry beside its one step kind
STEP_META = ("as", "when", "retry", "on_error")


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


#: a nested list of steps in a step's parameters (``map``'s ``steps``, a ``parallel``
#: branch, ``on_error``); the pipeline schema defines ``#/$defs/steps``
STEPS_REF: dict[str, Any] = {"$ref": "#/$defs/steps", "type": "array"}

ON_ERROR_SCHEMA: dict[str, Any] = {
    "description": "When the step fails (after its retries): `continue` passes its input on "
                   "and records the error; a list of steps handles it, with input "
                   "{error, step, input}, and their output replaces the step's.",
    "anyOf": [{"type": "string", "enum": ["continue"]}, STEPS_REF],
}


@dataclass(frozen=True)
class Retry:
    """``retry:``: run a failing step again, up to ``attempts`` times in all."""

    attempts: int = 3
    delay: float = 0.2
    backoff: float = 2.0
    max_delay: float = 30.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return float(min(self.max_delay, self.delay * self.backoff ** (attempt - 1)))

    SCHEMA = {
        "description": "Run the step again when it fails: `{attempts: 3, delay: 200ms, "
                       "backoff: 2}` (attempts counts the first one too).",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "delay": {**durations.SCHEMA, "default": "200ms",
                      "description": "Wait before the second attempt."},
            "backoff": {"type": "number", "minimum": 1, "default": 2,
                        "description": "Each further wait is this many times longer."},
            "max_delay": {**durations.SCHEMA, "default": "30s"},
        },
    }


@dataclass(frozen=True, eq=False)
class StepSpec:
    """One compiled step and its meta keys (``as``, ``when``, ``retry``, ``on_error``).

    ``on_error`` is ``"continue"`` (pass the input on, record the error) or the steps that
    handle the failure; ``index`` is the step's place in its list (the run log's path).
    """

    kind: str
    step: Step
    pointer: str
    name: str | None = None
    when: templates.Renderable | None = None
    retry: Retry | None = None
    on_error: Literal["continue"] | tuple[StepSpec, ...] | None = None
    index: int = 0


Steps = tuple[StepSpec, ...]


@dataclass(frozen=True, eq=False)
class Pipeline:
    """One version of one pipeline file, compiled."""

    name: str
    file: str
    trigger: Trigger
    steps: Steps
    description: str = ""
    concurrency: Concurrency = Concurrency()
    timeout: float | None = None
    allow_cloud: bool = True
    digest: str = ""
    version: int = 1
    loaded_at: float = field(default_factory=time.time)
    #: the file's ``tests:`` as written (``harkd test`` runs them)
    tests: tuple[dict[str, Any], ...] = ()
    #: ``mcp:`` as written: the pipeline is an MCP tool on ``/mcp`` (and a /v1 model)
    mcp: Mapping[str, Any] | None = None
    #: ``gateway: true``: the pipeline is the model ``pipeline/NAME`` on ``/v1``
    gateway: bool = False


@dataclass(eq=False)
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

    def steps(self, key: str, items: list[Any]) -> Steps:
        """Compile a nested list of steps (``map``'s ``steps``, a ``parallel`` branch, ...)
        exactly like the top-level one: same meta keys, positions and errors."""
        base = self.pointer + ("/" + escape(key) if key else "")
        return compile_steps(items, self.child(base))


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

    steps = root.steps("steps", data["steps"])
    _check_tests(data.get("tests") or [], steps, root)

    conc = data.get("concurrency") or {}
    mode: Mode = conc.get("mode", "parallel")
    concurrency = Concurrency(
        max=1 if mode in ("single", "restart") else int(conc.get("max", Concurrency.max)),
        mode=mode,
        queue=int(conc.get("queue", Concurrency.queue)),
    )
    timeout = root.seconds("timeout", data["timeout"]) if "timeout" in data else None
    _check_mcp(data.get("mcp"), root)

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
        tests=tuple(data.get("tests") or ()),
        mcp=data.get("mcp"),
        gateway=bool(data.get("gateway", False)),
    )


def _check_mcp(conf: Any, root: Build) -> None:
    """An ``mcp:`` block's ``input_schema`` must be a JSON Schema of an object."""
    schema = conf.get("input_schema") if isinstance(conf, dict) else None
    if schema is None:
        return
    import jsonschema

    at = replace(root, pointer=root.pointer + "/mcp")  # shares root.errors
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at.error("input_schema", f"not a valid JSON Schema: {exc.message}")
        return
    if schema.get("type") != "object":
        at.error("input_schema", "a tool's arguments are an object: give type: object")


def walk(steps: Steps) -> Iterator[StepSpec]:
    """Every step of ``steps`` at any depth: nested lists come from a step's ``children()``
    (``map``, ``parallel``, ``switch``) and from ``on_error``."""
    for spec in steps:
        yield spec
        children = getattr(spec.step, "children", None)
        for nested in children() if children is not None else ():
            yield from walk(nested)
        if isinstance(spec.on_error, tuple):
            yield from walk(spec.on_error)


def _check_tests(tests: list[Any], steps: Steps, root: Build) -> None:
    names = {spec.name for spec in walk(steps) if spec.name}
    for i, test in enumerate(tests):
        for name in test.get("steps") or {}:
            if name not in names:
                known = ", ".join(sorted(names)) or "none"
                where = root.positions.at(f"/tests/{i}/steps/{escape(name)}", key=True)
                root.errors.append(ConfigError(
                    f"test {test.get('name')!r} stubs step {name!r}, but no step has "
                    f"`as: {name}` (named steps: {known})", where))


def compile_steps(items: list[Any], b: Build) -> Steps:
    """Compile one list of step items; ``b.pointer`` is the list's JSON pointer."""
    steps: list[StepSpec] = []
    for i, item in enumerate(items):
        (kind_name,) = [k for k in item if k not in STEP_META]
        kind = b.registry.steps[kind_name]
        item_b = b.child(f"{b.pointer}/{i}")
        step = kind.build(normalise(kind.shorthand, item[kind_name]),
                          item_b.child(f"{item_b.pointer}/{escape(kind_name)}"))
        when = item_b.expression("when", str(item["when"])) if "when" in item else None
        retry = _retry(item["retry"], item_b.child(item_b.pointer + "/retry")) \
            if "retry" in item else None
        on_error: Literal["continue"] | Steps | None = None
        if item.get("on_error") == "continue":
            on_error = "continue"
        elif "on_error" in item:
            on_error = item_b.steps("on_error", item["on_error"])
        steps.append(StepSpec(kind_name, step, item_b.pointer, item.get("as"), when,
                              retry, on_error, i))
    return tuple(steps)


def _retry(raw: dict[str, Any], b: Build) -> Retry:
    base = Retry()
    return Retry(
        attempts=int(raw.get("attempts", base.attempts)),
        delay=b.seconds("delay", raw["delay"]) if "delay" in raw else base.delay,
        backoff=float(raw.get("backoff", base.backoff)),
        max_delay=b.seconds("max_delay", raw["max_delay"]) if "max_delay" in raw
        else base.max_delay,
    )
