"""Control flow as steps: ``map``, ``parallel`` and ``switch``.

Each holds lists of steps compiled like the top-level list (same meta keys, positions and
errors) and runs them through :func:`harkd.core.engine.run_steps`, so nested steps are timed,
recorded with their path (``2.map[3].0``), retried and recovered exactly like top-level
ones. Branches that run at once (``map`` items, ``parallel`` branches) run in one anyio
task group: the first failure cancels the others, and a run's cancellation or timeout
reaches every branch.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..core.engine import branch, recover, run_steps
from ..core.pipeline import ON_ERROR_SCHEMA, STEPS_REF
from ..core.registry import StepKind
from ..core.run import StepRecord
from ..errors import StepError, first_error
from ..records import dataclass
from ..streams import TextStream
from ..yamlfile import escape

if TYPE_CHECKING:
    from ..core.pipeline import Build, Steps
    from ..core.run import Run
    from ..templates import Renderable

DEFAULT_CONCURRENCY = 4


async def _gather(count: int, limit: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Call ``one(i)`` for every ``i < count``, at most ``limit`` at once.

    ``limit`` workers pull indexes in order (a task per worker, not per item). The first
    failure cancels the rest and is raised as itself, not as an exception group, so the
    run's error reads like any step's.
    """
    if limit <= 1 or count <= 1:
        for i in range(count):
            await one(i)
        return
    import anyio

    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            await one(i)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(min(limit, count)):
                tg.start_soon(worker)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def _type_name(value: Any) -> str:
    return {dict: "a mapping", str: "a string", int: "a number", float: "a number",
            bool: "true or false", type(None): "empty"}.get(type(value), type(value).__name__)


# -- map ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MapStep:
    """Run ``steps`` once per item of ``over``; the output is the list of their outputs,
    in the order of the items. Each item is the ``input`` of its sub-steps."""

    over: Renderable
    steps: Steps
    concurrency: int
    where: str

    async def __call__(self, run: Run, data: Any) -> Any:
        items = self.over.render(run.context(data))
        if isinstance(items, TextStream):
            items = await items.text()
        if not isinstance(items, list | tuple):
            raise StepError(f"map: `over` ({self.where}) must give a list, not "
                            f"{_type_name(items)}", status=422)
        record = run.step
        record.detail["items"] = len(items)
        prefix = f"{record.path}.map["
        results: list[Any] = [None] * len(items)

        async def one(i: int) -> None:
            results[i] = await run_steps(branch(run), self.steps, items[i], f"{prefix}{i}].")

        await _gather(len(items), self.concurrency, one)
        return results

    def children(self) -> tuple[Steps, ...]:
        return (self.steps,)


def _map(params: dict[str, Any], b: Build) -> MapStep:
    steps = b.steps("steps", params["steps"])
    _no_self_call(params["steps"], b, "steps")
    return MapStep(b.value("over", params["over"]), steps,
                   int(params.get("concurrency", DEFAULT_CONCURRENCY)), b.at("over").pointer)


def _no_self_call(items: Sequence[Any], b: Build, key: str) -> None:
    """A pipeline that calls itself inside ``map`` fans out without bound: refuse it."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        target = item.get("pipeline")
        name = target.get("name") if isinstance(target, dict) else target
        if name == b.name:
            b.child(f"{b.pointer}/{key}/{i}").error(
                "pipeline", f"pipeline {b.name!r} calls itself inside map: every item would start "
                    "another map; call another pipeline, or recurse outside map")
        for sub_key in ("map", "parallel", "switch"):
            nested = item.get(sub_key)
            if isinstance(nested, dict) and isinstance(nested.get("steps"), list):
                _no_self_call(nested["steps"], b, f"{key}/{i}/{sub_key}/steps")


MAP = StepKind(
    "map",
    "Run sub-steps once per item of a list (at most `concurrency` at once); the output is "
    "the list of their results, in order.",
    {"type": "object", "additionalProperties": False, "required": ["over", "steps"],
     "properties": {
         "over": {"description": "The list: a template such as \"{{ input.items }}\", or a "
                                 "list (its string items are templates)."},
         "concurrency": {"type": "integer", "minimum": 1, "maximum": 1024,
                         "default": DEFAULT_CONCURRENCY,
                         "description": "Items that run at once."},
         "steps": {**STEPS_REF, "description": "The steps each item runs through; their "
                                               "input is the item."},
     }},
    _map,
    examples=({"over": "{{ input.items }}", "steps": [{"template": "{{ input | upper }}"}]},),
)


# -- parallel -------------------------------------------------------------------------


@dataclass(frozen=True)
class Branch:
    """One named branch of ``parallel``, with its own ``on_error``."""

    name: str
    steps: Steps
    on_error: Literal["continue"] | Steps | None = None


@dataclass(frozen=True, eq=False)
class ParallelStep:
    """Run every branch at once on the same input; the output maps branch names to their
    outputs. A failing branch fails the step (cancelling the others) unless it has its own
    ``on_error``."""

    branches: tuple[Branch, ...]

    async def __call__(self, run: Run, data: Any) -> Any:
        record = run.step
        prefix = f"{record.path}.parallel."
        results: dict[str, Any] = {}

        async def one(i: int) -> None:
            b = self.branches[i]
            sub = branch(run)
            try:
                results[b.name] = await run_steps(sub, b.steps, data, f"{prefix}{b.name}.")
            except Exception as exc:
                if b.on_error is None:
                    raise
                results[b.name] = await recover(sub, b.on_error, exc, "parallel", data,
                                                _branch_record(run, record.path, b.name))

        await _gather(len(self.branches), len(self.branches), one)
        return {b.name: results[b.name] for b in self.branches}

    def children(self) -> tuple[Steps, ...]:
        return tuple(s for b in self.branches
                     for s in (b.steps, b.on_error) if isinstance(s, tuple))


def _branch_record(run: Run, path: str, name: str) -> StepRecord:
    """A run-log record for a branch's failure, so the waterfall shows what its
    ``on_error`` handled."""
    rec = StepRecord(0, "branch", name, time.time(), path=f"{path}.parallel.{name}")
    run.steps.append(rec)
    return rec


def _parallel(params: dict[str, Any], b: Build) -> ParallelStep:
    branches = []
    for name, raw in params.items():
        if isinstance(raw, list):
            branches.append(Branch(name, b.steps(name, raw)))
            continue
        sub = b.child(f"{b.pointer}/{escape(name)}")
        on_error: Literal["continue"] | Steps | None = None
        if raw.get("on_error") == "continue":
            on_error = "continue"
        elif "on_error" in raw:
            on_error = sub.steps("on_error", raw["on_error"])
        branches.append(Branch(name, sub.steps("steps", raw["steps"]), on_error))
    return ParallelStep(tuple(branches))


PARALLEL = StepKind(
    "parallel",
    "Run named branches at once on the same input; the output maps each branch name to "
    "its output. A branch is a list of steps, or {steps, on_error}.",
    {"type": "object", "minProperties": 1,
     "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$"},
     "additionalProperties": {
         "anyOf": [
             STEPS_REF,
             {"type": "object", "additionalProperties": False, "required": ["steps"],
              "properties": {
                  "steps": STEPS_REF,
                  "on_error": {**ON_ERROR_SCHEMA,
                               "description": "When the branch fails: continue (its "
                                              "output is the input) or steps that "
                                              "handle it."}}},
         ]}},
    _parallel,
    examples=({"short": [{"template": "{{ input[:20] }}"}], "loud": [{"pipeline": "shout"}]},),
)


# -- switch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One case of ``switch``: its condition (none for the default) and its steps."""

    when: Renderable | None
    steps: Steps


@dataclass(frozen=True, eq=False)
class SwitchStep:
    """Run the steps of the first case whose ``when`` is true (a case without ``when`` is
    the default); with no match the input passes on. The case's last step may stream."""

    cases: tuple[Case, ...]

    async def __call__(self, run: Run, data: Any) -> Any:
        record = run.step
        ctx = run.context(data)
        for i, case in enumerate(self.cases):
            if case.when is None or case.when.render(ctx):
                record.detail["case"] = i
                return await run_steps(run, case.steps, data, f"{record.path}.switch[{i}].",
                                       keep_stream=True)
        record.detail["case"] = None
        return data

    def children(self) -> tuple[Steps, ...]:
        return tuple(case.steps for case in self.cases)


def _switch(params: dict[str, Any], b: Build) -> SwitchStep:
    cases = []
    default: int | None = None
    for i, raw in enumerate(params["cases"]):
        sub = b.child(f"{b.pointer}/cases/{i}")
        if "when" in raw:
            if default is not None:
                b.error(f"cases/{i}/when",
                        f"this case comes after the default case ({default + 1}), so it can "
                        "never run; move the case without `when` to the end")
            cases.append(Case(sub.expression("when", str(raw["when"])),
                              sub.steps("steps", raw["steps"])))
            continue
        if default is not None:
            b.error(f"cases/{i}", f"switch has two default cases ({default + 1} and {i + 1}, "
                                  "both without `when`); give one a `when`")
        default = i
        cases.append(Case(None, sub.steps("steps", raw["steps"])))
    return SwitchStep(tuple(cases))


_CASES = {
    "type": "array", "minItems": 1,
    "items": {"type": "object", "additionalProperties": False, "required": ["steps"],
              "properties": {
                  "when": {"type": ["string", "boolean"],
                           "description": "A Jinja expression; the first true case runs. "
                                          "Leave it out for the default case (last)."},
                  "steps": STEPS_REF}},
}

SWITCH = StepKind(
    "switch",
    "Run the steps of the first case whose `when` is true; a case without `when` is the "
    "default; with no match the input passes on.",
    {"type": "object", "additionalProperties": False, "required": ["cases"],
     "properties": {"cases": _CASES}},
    _switch,
    shorthand="cases",
    examples=([{"when": "input.kind == 'bug'", "steps": [{"template": "bug"}]},
               {"steps": [{"template": "other"}]}],),
)
