"""Jinja2 templates in a sandbox, compiled once when a pipeline loads.

Templates see ``input``, ``vars``, ``trigger`` and ``run``. They run in Jinja's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: no attribute starting with ``_``,
no mutation of the data they see, no file or network access, and undefined names are
errors rather than silent blanks (use ``default()`` or ``is defined`` for optional
fields; ``input.a.b | default(x)`` works even when ``a`` is missing).

A mapping's key wins over a method of the same name (``input.items`` is the body's
``items`` field). A string that is exactly one ``{{ expression }}`` renders to the
expression's native value (a list stays a list), so
``json: {items: "{{ input.items }}"}`` passes data on unchanged.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jinja2
from jinja2 import nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ConfigError, Position, StepError
from .records import dataclass

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_MARKERS = ("{{", "{%", "{#")


def _fromjson(text: str) -> Any:
    return json.loads(text)


class Undefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
    """Strict when used (printing, testing, iterating raise), but chainable, so
    ``input.a.b | default('x')`` works when ``a`` is missing."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, where a mapping's key wins over a method of the same name: webhook
    bodies have fields called ``items``, ``keys``, ``values``, ``count``, ``index``, and
    ``input.items`` must mean the field, not ``dict.items``."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # (a dict, the common case, without the ABC check: 0.1 us a lookup)
        if (type(obj) is dict or isinstance(obj, Mapping)) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=Undefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fromjson"] = _fromjson
    env.filters["json"] = env.filters["tojson"]
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env


ENV = _environment()


class Renderable(Protocol):
    """A compiled value: a template, an expression, a constant or a structure of them."""

    def render(self, context: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Constant:
    """A value with no template in it; renders to itself."""

    value: Any

    def render(self, context: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True)
class Template:
    """A text template; renders to a string. Compiled on first use (see :func:`text`)."""

    source: str
    where: str

    def render(self, context: Mapping[str, Any]) -> Any:
        # _guard inlined: every template step's render passes here.
        try:
            return _render(self.source, context)
        except _FAILURES as exc:
            raise _failure(self.where, exc) from None


@dataclass(frozen=True)
class Expression:
    """A Jinja expression; renders to its native value. Compiled on first use."""

    source: str
    where: str
    body: str

    def render(self, context: Mapping[str, Any]) -> Any:
        value = _guard(self.where, lambda: _evaluate(self.body, context))
        if isinstance(value, jinja2.Undefined):
            _guard(self.where, lambda: str(value))
        return value


# Loading parses (errors come with positions then); compiling to Python is seven times
# dearer and waits for the first render, and a source is compiled once per process
# however many pipelines and versions hold it.
@functools.lru_cache(maxsize=8192)
def _compiled_template(source: str) -> tuple[jinja2.Template, dict[str, Any]]:
    template = ENV.from_string(source)
    return template, dict(template.globals)


_CONTEXT = ENV.context_class


def _render(source: str, context: Mapping[str, Any]) -> str:
    """What ``Template.render(context)`` does, with the template's globals merged into a
    plain dict once per source rather than read from Jinja's ChainMap on every render
    (7.5 -> 3 µs for a one-line template)."""
    template, globals_ = _compiled_template(source)
    # Template.new_context's Context without it: new_context would pass the template's
    # ChainMap of globals, which Context iterates into a set on every render (2 us). The
    # globals are in the merged dict; Context's own copy of their names is only read when
    # a template imports another, which harkd's (no loader) cannot (0.1 us less).
    ctx = _CONTEXT(ENV, {**globals_, **context}, template.name, template.blocks)
    try:
        text: str = template.environment.concat(template.root_render_func(ctx))
    except Exception:  # noqa: BLE001 - as Template.render: Jinja re-raises it, its traceback
        template.environment.handle_exception()  # pointing into the template
    return text


@functools.lru_cache(maxsize=8192)
def _compiled_expression(body: str) -> tuple[jinja2.Template, dict[str, Any]]:
    """The template ``ENV.compile_expression(body)`` makes (``result = <body>``), and its
    globals as a plain dict, as for :func:`_render`."""
    parser = Parser(ENV, body, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    expr.set_environment(ENV)
    template = ENV.from_string(nodes.Template(
        [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)], lineno=1))
    return template, dict(template.globals)


def _evaluate(body: str, context: Mapping[str, Any]) -> Any:
    """What calling ``ENV.compile_expression(body, False)`` with ``context`` does (its
    value, Undefined as is), without rebuilding the globals on every call."""
    template, globals_ = _compiled_expression(body)
    ctx = _CONTEXT(ENV, {**globals_, **context}, template.name, template.blocks)
    for _ in template.root_render_func(ctx):
        pass
    return ctx.vars["result"]


def _check_names(node: nodes.Node) -> None:
    """What Jinja would find only when compiling: filters and tests that do not exist."""
    for found in node.find_all((nodes.Filter, nodes.Test)):
        table = ENV.filters if isinstance(found, nodes.Filter) else ENV.tests
        if found.name not in table:
            what = "filter" if isinstance(found, nodes.Filter) else "test"
            raise jinja2.TemplateAssertionError(f"No {what} named {found.name!r}.",
                                                found.lineno)


@dataclass(frozen=True)
class Structure:
    """A dict or list whose leaves are renderables."""

    items: tuple[tuple[Any, Renderable], ...]
    is_list: bool

    def render(self, context: Mapping[str, Any]) -> Any:
        if self.is_list:
            return [r.render(context) for _, r in self.items]
        return {k: r.render(context) for k, r in self.items}


#: what rendering a template may raise that is the template's (or its data's) fault
_FAILURES = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


def _guard(where: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _FAILURES as exc:
        raise _failure(where, exc) from None


def _failure(where: str, exc: Exception) -> StepError:
    """The step error for a template that failed to render."""
    if isinstance(exc, jinja2.UndefinedError):
        return StepError(f"template at {where}: {exc.message}", status=422)
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return StepError(f"template at {where} was refused by the sandbox: {exc}")
    return StepError(f"template at {where}: {type(exc).__name__}: {exc}")


def _syntax(exc: jinja2.TemplateSyntaxError, position: Position) -> ConfigError:
    line = position.line + (exc.lineno - 1 if exc.lineno else 0)
    return ConfigError(
        f"template does not compile: {exc.message}",
        Position(position.file, line, position.column, position.pointer),
    )


def is_template(value: str) -> bool:
    return any(m in value for m in _MARKERS)


def text(source: str, position: Position) -> Renderable:
    """Compile a text template (a constant if it has no Jinja markers)."""
    if not is_template(source):
        return Constant(source)
    single = _SINGLE.match(source)
    if single is not None:
        return expression(single.group("expr"), position)
    try:
        _parsed(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax(exc, position) from None
    return Template(source, position.pointer)


def expression(source: str, position: Position) -> Renderable:
    """Compile an expression; ``{{ ... }}`` around it is allowed and ignored."""
    single = _SINGLE.match(source)
    body = (single.group("expr") if single else source).strip()
    try:
        _parsed_expression(body)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax(exc, position) from None
    return Expression(source, position.pointer, body)


# Loading checks each source once per process: a hundred pipelines (or a reload of one
# file among them) that share a template do not parse it again. A source that fails is
# not cached and raises the same error each time.
@functools.lru_cache(maxsize=8192)
def _parsed(source: str) -> None:
    _check_names(ENV.parse(source))


@functools.lru_cache(maxsize=8192)
def _parsed_expression(body: str) -> None:
    parser = Parser(ENV, body, state="variable")
    _check_names(parser.parse_expression())
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)


def value(obj: Any, position: Callable[[str], Position], ptr: str) -> Renderable:
    """Compile every string leaf of ``obj`` as a text template."""
    if isinstance(obj, str):
        return text(obj, position(ptr))
    if isinstance(obj, dict):
        items = tuple((k, value(v, position, f"{ptr}/{k}")) for k, v in obj.items())
        if all(isinstance(r, Constant) for _, r in items):
            return Constant(obj)
        return Structure(items, is_list=False)
    if isinstance(obj, list):
        items = tuple((i, value(v, position, f"{ptr}/{i}")) for i, v in enumerate(obj))
        if all(isinstance(r, Constant) for _, r in items):
            return Constant(obj)
        return Structure(items, is_list=True)
    return Constant(obj)
