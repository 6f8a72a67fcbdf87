"""Arithmetic without ``eval``: parse with :mod:`ast` and walk only number nodes,
operators and a few math functions, with limits that keep a caller from burning CPU."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from .registry import ToolError

_BIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "log": math.log,
    "log10": math.log10, "log2": math.log2, "exp": math.exp, "abs": abs, "round": round,
    "floor": math.floor, "ceil": math.ceil, "min": min, "max": max,
}
_NAMES = {"pi": math.pi, "e": math.e, "tau": math.tau}
MAX_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10 ** 100


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; raises ToolError for anything else."""
    text = expression.replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    if len(text) > MAX_LENGTH:
        raise ToolError(f"expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ToolError(f"cannot compute {expression!r}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"not a number: {expression!r}")
    return value


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large")
        return _check(_BIN[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS and not node.keywords):
        return _check(_FUNCS[node.func.id](*(_eval(a) for a in node.args)))
    raise ToolError(f"not allowed in a calculation: {ast.unparse(node)!r}")


def _check(value: Any) -> Any:
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise ToolError("result is too large")
    return value
