"""A yes-or-no JSON Schema check for the common case: the document is valid.

jsonschema costs about 25 ms to import and 0.15 ms per pipeline document, most of a first
start's validation. This module compiles a schema once into plain Python checks that say
only whether a document is valid, for the keywords harkd's generated schemas use. When it
says yes, the answer is jsonschema's (draft 2020-12, formats not asserted); when it says
no, :mod:`harkd.core.validate` asks jsonschema for the errors and their wording. A schema
with a keyword it does not know (a plugin's ``if``, say) is not compiled: every document
then goes to jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

#: keywords that never change whether a document is valid (annotations, containers)
_IGNORED = frozenset({
    "$schema", "$id", "$comment", "$defs", "definitions", "title", "description",
    "default", "examples", "deprecated", "readOnly", "writeOnly", "format",
    "contentMediaType", "contentEncoding",
})


class Unsupported(Exception):
    """A keyword or reference this module does not check."""


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _every(checks: list[Check]) -> Check:
    """A check that each of ``checks`` holds, in order (a loop: ``all()`` over a generator
    made a generator a call: 40% of checking a small pipeline document)."""
    def check(v: Any) -> bool:
        for c in checks:  # noqa: SIM110 - see the docstring
            if not c(v):
                return False
        return True
    return check


def equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


class Compiler:
    """Compiles one root schema; ``$ref`` may point into its ``$defs``."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        checks: list[Check] = []
        for key, arg in schema.items():
            if key in _IGNORED:
                continue
            make = getattr(self, "k_" + key.lstrip("$"), None)
            if make is None:
                raise Unsupported(key)
            check = make(arg, schema)
            if check is not None:
                checks.append(check)
        if len(checks) == 1:
            return checks[0]
        return _every(checks)

    # -- keywords: each returns a check of the instance (None: nothing to check) -------

    def k_ref(self, ref: Any, _: dict[str, Any]) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r}")
        target: Any = self.root
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or token not in target:
                raise Unsupported(f"$ref {ref!r}")
            target = target[token]
        found = target
        if ref not in self.refs:
            slot: list[Check] = []
            self.refs[ref] = lambda v: slot[0](v)  # recursion: compiled once, used later
            slot.append(self.compile(found))
        return self.refs[ref]

    def k_type(self, t: Any, _: dict[str, Any]) -> Check:
        names = t if isinstance(t, list) else [t]
        try:
            tests = [_TYPES[n] for n in names]
        except (KeyError, TypeError):
            raise Unsupported(f"type {t!r}") from None
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(test(v) for test in tests)

    def k_properties(self, props: Any, _: dict[str, Any]) -> Check:
        compiled = {k: self.compile(s) for k, s in props.items()}

        def check(v: Any) -> bool:  # the document's keys: a step has 1-3 of 17
            if isinstance(v, dict):
                for k, x in v.items():
                    c = compiled.get(k)
                    if c is not None and not c(x):
                        return False
            return True
        return check

    def k_additionalProperties(self, extra: Any, schema: dict[str, Any]) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        known = frozenset(schema.get("properties", {}))
        if extra is True or extra == {}:
            return lambda v: True
        if extra is False:
            return lambda v: not isinstance(v, dict) or v.keys() <= known
        c = self.compile(extra)
        return lambda v: not isinstance(v, dict) or all(
            c(x) for k, x in v.items() if k not in known)

    def k_required(self, names: Any, _: dict[str, Any]) -> Check:
        need = frozenset(names)
        return lambda v: not isinstance(v, dict) or v.keys() >= need

    def k_propertyNames(self, sch: Any, _: dict[str, Any]) -> Check:
        c = self.compile(sch)
        return lambda v: not isinstance(v, dict) or all(c(k) for k in v)

    def k_minProperties(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, dict) or len(v) >= n

    def k_maxProperties(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, dict) or len(v) <= n

    def k_items(self, sch: Any, schema: dict[str, Any]) -> Check:
        if "prefixItems" in schema or isinstance(sch, list):
            raise Unsupported("prefixItems")
        c = self.compile(sch)

        def check(v: Any) -> bool:
            if isinstance(v, list):
                for x in v:
                    if not c(x):
                        return False
            return True
        return check

    def k_minItems(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= n

    def k_maxItems(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, list) or len(v) <= n

    def k_uniqueItems(self, on: Any, _: dict[str, Any]) -> Check | None:
        if not on:
            return None
        return lambda v: not isinstance(v, list) or not any(
            equal(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v)))

    def k_minLength(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= n

    def k_maxLength(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, str) or len(v) <= n

    def k_pattern(self, p: Any, _: dict[str, Any]) -> Check:
        rx = re.compile(p)
        return lambda v: not isinstance(v, str) or rx.search(v) is not None

    def k_minimum(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or v >= n

    def k_maximum(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or v <= n

    def k_exclusiveMinimum(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or v > n

    def k_exclusiveMaximum(self, n: Any, _: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or v < n

    def k_enum(self, values: Any, _: dict[str, Any]) -> Check:
        options = list(values)
        return lambda v: any(equal(v, o) for o in options)

    def k_const(self, value: Any, _: dict[str, Any]) -> Check:
        return lambda v: equal(v, value)

    def k_anyOf(self, branches: Any, _: dict[str, Any]) -> Check:
        cs = [self.compile(b) for b in branches]
        return lambda v: any(c(v) for c in cs)

    def k_allOf(self, branches: Any, _: dict[str, Any]) -> Check:
        return _every([self.compile(b) for b in branches])

    def k_oneOf(self, branches: Any, _: dict[str, Any]) -> Check:
        cs = [self.compile(b) for b in branches]
        return lambda v: sum(1 for c in cs if c(v)) == 1

    def k_not(self, sch: Any, _: dict[str, Any]) -> Check:
        c = self.compile(sch)
        return lambda v: not c(v)


def compile_check(schema: Any) -> Check | None:
    """A check that ``schema`` holds, or None if the schema uses what this module does
    not check."""
    try:
        return Compiler(schema).compile(schema)
    except (Unsupported, re.error, TypeError, AttributeError):
        return None
