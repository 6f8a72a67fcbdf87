"""The ``pipeline`` step: run another pipeline by name with this step's input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.registry import StepKind
from ..errors import StepError
from ..records import dataclass
from ..templates import Renderable

if TYPE_CHECKING:
    from ..core.pipeline import Build
    from ..core.run import Run


@dataclass(frozen=True, eq=False)
class PipelineStep:
    """Run the named pipeline's current version; the output is its result."""

    name: Renderable
    input: Renderable | None

    async def __call__(self, run: Run, data: Any) -> Any:
        ctx = run.context(data)
        name = str(self.name.render(ctx))
        catalog = run.services.catalog
        bound = catalog.bound(name) if catalog is not None else None
        if bound is None:
            raise StepError(f"pipeline {name!r} is not loaded", status=502)
        payload = self.input.render(ctx) if self.input is not None else data
        trigger = {"kind": "pipeline", "caller": run.pipeline.name, "caller_run": run.id}
        child = bound.new_run(payload, trigger, run.emit, depth=run.depth + 1,
                              streaming=run.streaming)
        run.step.detail.update(pipeline=name, run_id=child.id)
        result = await bound.run(child)
        if not result.ok:
            raise StepError(f"pipeline {name!r} failed: {result.error}",
                            status=result.http_status)
        return result.output


def _build(params: dict[str, Any], b: Build) -> PipelineStep:
    return PipelineStep(
        b.text("name", params["name"]),
        b.value("input", params["input"]) if "input" in params else None,
    )


PIPELINE = StepKind(
    "pipeline",
    "Run another pipeline with this step's input (or `input`); its result is the output.",
    {"type": "object", "additionalProperties": False, "required": ["name"],
     "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z0-9{][^\s/]*$"},
                    "input": {"description": "The input to send; string leaves are "
                                             "templates. Default: this step's input."}}},
    _build,
    shorthand="name",
)
