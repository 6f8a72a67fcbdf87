"""Tools that ``llm`` steps may offer a model: a name, a JSON Schema of arguments, a function.

Register a function with :func:`tool` (its schema comes from its type hints and its
docstring's ``Args:`` section), or name a :class:`Tool` in the ``harkd.tools`` entry-point
group, as the built-ins do. A tool that wants the daemon's services or the calling run
takes a ``ctx: ToolContext`` parameter, which is not shown to the model.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ..errors import HarkError
from ..logs import get_logger
from ..records import dataclass

if TYPE_CHECKING:
    from ..contracts import Services
    from ..core.run import Run

log = get_logger("harkd.tools")

GROUP = "harkd.tools"
F = TypeVar("F", bound=Callable[..., Any])


class ToolError(HarkError, RuntimeError):
    """A tool could not do what it was asked. Raised by tools; the tool loop sends the
    message to the model as the tool's result instead of failing the run."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use: the daemon's services, the calling run (if any) and the
    ``tools:`` section of ``harkd.yaml``."""

    services: Services | None = None
    run: Run | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.settings.get(name)
        return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Tool:
    """One tool. ``fn`` is called with the model's arguments (and ``ctx`` if it takes it)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any]
    takes_context: bool = False
    timeout: float | None = None

    def spec(self) -> dict[str, Any]:
        """The OpenAI tool definition the model sees."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": dict(self.parameters)}}

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> Any:
        kwargs = dict(args)
        if self.takes_context:
            kwargs["ctx"] = ctx
        result = self.fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


_REGISTERED: dict[str, Tool] = {}
_LOADED: dict[str, Tool] | None = None


@overload
def tool(fn: F, /) -> Tool: ...


@overload
def tool(*, name: str | None = None, timeout: float | None = None,
         register: bool = True) -> Callable[[F], Tool]: ...


def tool(fn: Any = None, /, *, name: str | None = None, timeout: float | None = None,
         register: bool = True) -> Any:
    """Make a :class:`Tool` of a function (sync or async) and register it by name."""

    def wrap(f: Callable[..., Any]) -> Tool:
        t = from_function(f, name=name, timeout=timeout)
        if register:
            _REGISTERED[t.name] = t
        return t

    return wrap(fn) if fn is not None else wrap


def available() -> dict[str, Tool]:
    """Every tool: entry points (loaded once) and those registered with :func:`tool`."""
    global _LOADED
    if _LOADED is None:
        loaded: dict[str, Tool] = {}
        for ep in importlib.metadata.entry_points(group=GROUP):
            try:
                value = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin disables only itself
                log.warning("tool_plugin_failed", name=ep.name, value=ep.value,
                            error=f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(value, Tool):
                loaded[ep.name] = value
            elif callable(value):
                loaded[ep.name] = from_function(value, name=ep.name)
        _LOADED = loaded
    return {**_LOADED, **_REGISTERED}


def from_function(fn: Callable[..., Any], *, name: str | None = None,
                  timeout: float | None = None) -> Tool:
    """A :class:`Tool` whose schema comes from ``fn``'s type hints and docstring."""
    summary, arg_docs = _docstring(inspect.getdoc(fn) or "")
    hints = typing.get_type_hints(fn)
    props: dict[str, Any] = {}
    required: list[str] = []
    takes_context = False
    for pname, param in inspect.signature(fn).parameters.items():
        if pname == "ctx":
            takes_context = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        node = json_type(hints.get(pname, str))
        if pname in arg_docs:
            node["description"] = arg_docs[pname]
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif param.default is not None:
            node["default"] = param.default
        props[pname] = node
    schema: dict[str, Any] = {"type": "object", "properties": props,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    return Tool(name or fn.__name__, summary or fn.__name__, schema, fn, takes_context,
                timeout)


def json_type(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a Python type hint (the common cases)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return json_type(rest[0]) if len(rest) == 1 else {"anyOf": [json_type(a) for a in rest]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        return {"type": "array", **({"items": json_type(args[0])} if args else {})}
    if origin is dict or hint is dict:
        return {"type": "object"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return {"type": simple[hint]} if hint in simple else {}


_ARG = re.compile(r"^\s{0,8}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary paragraph and the ``Args:`` descriptions of a Google-style docstring."""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current, indent = "args", None, None
            continue
        if stripped.rstrip(":") in ("Returns", "Raises", "Example", "Examples", "Note"):
            section = "other"
            continue
        if section == "summary":
            if not stripped and summary_lines:
                section = "body"
            elif stripped:
                summary_lines.append(stripped)
        elif section == "args" and stripped:
            depth = len(line) - len(line.lstrip())
            m = _ARG.match(line)
            if m and (indent is None or depth <= indent):
                indent = depth
                current = m.group(1)
                args[current] = m.group(2).strip()
            elif current:
                args[current] += " " + stripped
    return " ".join(summary_lines), args


async def invoke(t: Tool, args: Mapping[str, Any], ctx: ToolContext,
                 timeout: float | None) -> Any:
    """Call a tool with its own timeout (or ``timeout``)."""
    limit = t.timeout if t.timeout is not None else timeout
    async with asyncio.timeout(limit):
        return await t.call(args, ctx)

