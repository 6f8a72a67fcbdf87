"""The ``template``, ``set`` and ``log`` steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.registry import StepKind
from ..logs import get_logger
from ..records import dataclass
from ..secrets import REDACTOR
from ..templates import Renderable

if TYPE_CHECKING:
    from ..core.pipeline import Build
    from ..core.run import Run

log = get_logger("harkd.step")


@dataclass(frozen=True, eq=False)
class TemplateStep:
    """Render text; the output is the rendered string (or a native value for a single
    ``{{ expression }}``)."""

    text: Renderable

    async def __call__(self, run: Run, data: Any) -> Any:
        return self.text.render(run.context(data))


def _template(params: dict[str, Any], b: Build) -> TemplateStep:
    return TemplateStep(b.text("text", params["text"]))


TEMPLATE = StepKind(
    "template",
    "Render a Jinja template; its output is the text.",
    {"type": "object", "additionalProperties": False, "required": ["text"],
     "properties": {"text": {"type": "string", "description": "The template."}}},
    _template,
    shorthand="text",
    examples=("Hello {{ input.name }}",),
)


@dataclass(frozen=True, eq=False)
class SetStep:
    """Evaluate expressions into ``vars``; the input passes on unchanged."""

    values: tuple[tuple[str, Renderable], ...]

    async def __call__(self, run: Run, data: Any) -> Any:
        ctx = run.context(data)
        for name, value in self.values:
            run.vars[name] = value.render(ctx)
            ctx["vars"] = run.vars
        return data


def _set(params: dict[str, Any], b: Build) -> SetStep:
    values = []
    for name, raw in params.items():
        if isinstance(raw, str) and "{{" not in raw and "{%" not in raw:
            values.append((name, b.expression(name, raw)))
        else:
            values.append((name, b.value(name, raw)))
    return SetStep(tuple(values))


SET = StepKind(
    "set",
    "Set vars.NAME to the value of each expression; the input passes on unchanged. "
    "A string is a Jinja expression (quote literal text: \"'hello'\"); other values are "
    "used as they are.",
    {"type": "object", "minProperties": 1,
     "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
    _set,
    examples=({"total": "input.items | length"},),
)


@dataclass(frozen=True, eq=False)
class LogStep:
    """Write a structured log line with the rendered message; the input passes on."""

    message: Renderable
    level: str

    async def __call__(self, run: Run, data: Any) -> Any:
        text = REDACTOR(str(self.message.render(run.context(data))))
        getattr(log, self.level)("pipeline_log", message=text)
        run.step.detail["message"] = text
        return data


def _log(params: dict[str, Any], b: Build) -> LogStep:
    return LogStep(b.text("message", params["message"]), params.get("level", "info"))


LOG = StepKind(
    "log",
    "Log a rendered message; the input passes on unchanged.",
    {"type": "object", "additionalProperties": False, "required": ["message"],
     "properties": {"message": {"type": "string"},
                    "level": {"enum": ["debug", "info", "warning", "error"],
                              "default": "info"}}},
    _log,
    shorthand="message",
)
