"""Validate pipeline and config data against the generated schemas, with positions.

jsonschema finds the errors; this module turns each into a
:class:`~harkd.errors.ConfigError` that points at the offending key or value and reads as a
person would write it: "unknown step 'templat'; did you mean 'template'?".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..values import nodes
from ..yamlfile import Positions, pointer
from . import schema
from .pipeline import STEP_META
from .quickcheck import Check, compile_check
from .registry import Registry

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError

_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "empty",
}
_PY_TYPES = {
    dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
    float: "number", type(None): "null",
}


#: Keys that older harkd versions spelled differently: the place (a path with ``*`` for
#: list indexes, "" for the top level) -> old key -> new key. One table serves pipeline
#: files and ``harkd.yaml``; a hint is given only where the new key is valid.
RENAMED: dict[str, dict[str, str]] = {
    "": {"on": "trigger", "actions": "steps", "limits": "concurrency",
         "pipelines_dir": "pipelines", "state_dir": "state"},
    "trigger": {"webhook": "http", "schedule": "cron", "ws": "websocket",
                "microphone": "mic"},
    "steps/*": {"output": "as", "if": "when", "render": "template", "request": "http",
                "call": "pipeline"},
    "concurrency": {"limit": "max", "policy": "mode"},
    "server": {"bind": "listen", "auth_token": "token"},
}


def renamed_key(path: Iterable[Any], key: str) -> str | None:
    """The new name of ``key`` at ``path`` if an older harkd called it ``key``."""
    place = "/".join("*" if isinstance(p, int) else str(p) for p in path)
    return RENAMED.get(place, {}).get(key)


class _Checks:
    """A pipeline schema of one registry (with all its kinds, or some), its quick check,
    and jsonschema's validator (made only when a document fails the quick check)."""

    def __init__(self, registry: Registry, steps: frozenset[str] | None = None,
                 triggers: frozenset[str] | None = None) -> None:
        self.registry = registry
        self.schema = schema.pipeline_schema(registry, steps, triggers)
        self.quick: Check | None = compile_check(self.schema)
        self._validator: jsonschema.Draft202012Validator | None = None

    def validator(self) -> jsonschema.Draft202012Validator:
        if self._validator is None:
            import jsonschema

            self._validator = jsonschema.Draft202012Validator(self.schema)
        return self._validator


_Key = tuple[int, frozenset[str] | None, frozenset[str] | None]
#: by registry, and the kinds a document names (None: all); a folder's documents name a
#: few sets of kinds between them
_PIPELINE: dict[_Key, _Checks] = {}


def _checks(registry: Registry, steps: frozenset[str] | None = None,
            triggers: frozenset[str] | None = None) -> _Checks:
    key = (id(registry), steps, triggers)
    hit = _PIPELINE.get(key)
    if hit is None or hit.registry is not registry:
        if len(_PIPELINE) >= 256:
            _PIPELINE.clear()
        hit = _PIPELINE[key] = _Checks(registry, steps, triggers)
    return hit


def _named(data: Any, registry: Registry) -> tuple[frozenset[str], frozenset[str]]:
    """The step and trigger kinds a pipeline document may name: every key of its mappings
    outside ``trigger`` that is a step kind's name (a step nests anywhere in a kind's
    parameters), and the trigger's keys that are a trigger kind's."""
    doc = data if isinstance(data, dict) else {}
    keys: set[Any] = set()
    for value in nodes([v for k, v in doc.items() if k != "trigger"]):
        if isinstance(value, dict):
            keys.update(value)
    trigger = doc.get("trigger")
    return (frozenset(registry.steps.known().intersection(keys)),
            frozenset(registry.triggers.known().intersection(
                trigger if isinstance(trigger, dict) else ())))


def validate_pipeline(
    data: Any, positions: Positions, registry: Registry | None = None
) -> list[ConfigError]:
    """Every schema error of one pipeline document, each with its position. A valid
    document passes :mod:`harkd.core.quickcheck` alone, against a schema of just the kinds
    it names (so a start imports only the kinds its pipelines use); jsonschema (imported
    then) finds and words the errors of one that does not, against every kind."""
    if data is None:
        return [ConfigError("file is empty; a pipeline needs a trigger and steps",
                            positions.at(""))]
    from . import registry as reg

    registry = registry or reg.default()
    named = _checks(registry, *_named(data, registry))
    if named.quick is not None and _quick_ok(named.quick, data):
        return []
    errors = list(_shape(_checks(registry).validator().iter_errors(data), positions))
    return _dedupe(errors)


def _quick_ok(check: Check, data: Any) -> bool:
    """The quick check's yes; anything it cannot judge (a plugin's odd schema value, a
    document nested past the recursion limit) is left to jsonschema."""
    try:
        return check(data)
    except (TypeError, ValueError, RecursionError):
        return False


def errors_of(validator: jsonschema.protocols.Validator, data: Any,
              positions: Positions) -> list[ConfigError]:
    """Every error ``validator`` finds in ``data``, as messages with positions, each once."""
    return _dedupe(list(_shape(validator.iter_errors(data), positions)))


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for e in sorted(errors, key=lambda e: (e.line, e.column)):
        key = (e.line, e.column, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _type_of(value: Any) -> str:
    return _PY_TYPES.get(type(value), type(value).__name__)


def _expected(schema_: Any) -> str:
    if not isinstance(schema_, dict):
        return "a valid value"
    if "enum" in schema_:
        return "one of " + ", ".join(repr(v) for v in schema_["enum"])
    t = schema_.get("type")
    if isinstance(t, list):
        return " or ".join(_TYPE_NAMES.get(str(x), str(x)) for x in t)
    if isinstance(t, str):
        return _TYPE_NAMES.get(t, t)
    for key in ("anyOf", "oneOf"):
        if key in schema_:
            return " or ".join(_expected(s) for s in schema_[key])
    return "a valid value"


def _where(path: Iterable[Any]) -> str:
    """A path as a person reads it: ``step 2 (map)``, ``step 2 (map) steps/0 (http)``."""
    parts = list(path)
    if len(parts) >= 2 and parts[0] == "steps" and isinstance(parts[1], int):
        text = f"step {parts[1] + 1}"
        rest = parts[2:]
        if rest and rest[0] not in STEP_META:
            text += f" ({rest[0]})"
            rest = rest[1:]
        if rest:
            text += " " + "/".join(str(p) for p in rest)
        return text
    return "/".join(str(p) for p in parts) or "the file"


def _is_step(sch: dict[str, Any]) -> bool:
    """Whether ``sch`` is the schema of one step item (top-level or nested)."""
    props = sch.get("properties")
    return isinstance(props, dict) and "as" in props and "oneOf" in sch


def _shape(errors: Iterable[ValidationError], positions: Positions) -> Iterable[ConfigError]:
    for err in errors:
        yield from _one(err, positions)


def _one(err: ValidationError, positions: Positions) -> Iterable[ConfigError]:
    import difflib  # for wording errors only: a valid document never needs it

    path: list[Any] = list(err.absolute_path)
    ptr = pointer(path)
    instance: Any = err.instance
    validator: Any = err.validator
    sch: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}

    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(sch.get("properties", {}))
        for key in instance:
            if key in allowed:
                continue
            is_step_item = _is_step(sch)
            if is_step_item:
                what, choices = "step", [k for k in allowed if k not in STEP_META]
                if not difflib.get_close_matches(str(key), choices, n=1, cutoff=0.6) and \
                        difflib.get_close_matches(str(key), STEP_META, n=1, cutoff=0.6):
                    what, choices = "key", list(STEP_META)  # a misspelt when, as, retry
            elif path == ["trigger"]:
                what, choices = "trigger", allowed
            else:
                what, choices = "key", allowed
            msg = f"unknown {what} {key!r}"
            if path and (not is_step_item or len(path) > 2) and path != ["trigger"]:
                msg += f" in {_where(path)}"
            renamed = renamed_key(["steps", 0] if is_step_item else path, str(key))
            close = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.6)
            if renamed is not None and renamed in allowed:
                msg = (f"{key!r} was renamed to {renamed!r}"
                       + (f" in {_where(path)}" if path else "")
                       + f"; write {renamed!r} instead")
            elif close:
                msg += f"; did you mean {close[0]!r}?"
            else:
                msg += "; expected one of " + ", ".join(sorted(choices))
            yield ConfigError(msg, positions.at(pointer([*path, key]), key=True))
        return

    if validator == "oneOf" and _is_step(sch) and isinstance(instance, dict):
        kinds = [k for k in instance if k not in STEP_META]
        if not kinds:
            if not [k for k in instance if k not in sch.get("properties", {})]:
                yield ConfigError(
                    f"{_where(path)} names no step; add one of: "
                    + ", ".join(k for k in sch.get("properties", {}) if k not in STEP_META),
                    positions.at(ptr))
        elif len(kinds) > 1:
            yield ConfigError(
                f"{_where(path)} holds several steps ({', '.join(map(repr, kinds))}); "
                "each list item is one step (is a '-' missing?)",
                positions.at(pointer([*path, kinds[1]]), key=True))
        return

    if validator in ("anyOf", "oneOf"):
        # Descend into the branch whose type matches what the user wrote.
        want = _type_of(instance)
        for index, branch_errors in _branches(err):
            branch = sch[validator][index]
            t = branch.get("type") if isinstance(branch, dict) else None
            types = t if isinstance(t, list) else [t]
            if want in types or (want == "integer" and "number" in types):
                for sub in branch_errors:
                    yield from _one(sub, positions)
                return
        yield ConfigError(
            f"{_where(path)} must be {_expected(sch)}, not {_TYPE_NAMES.get(want, want)}",
            positions.at(ptr))
        return

    if validator == "required":
        required: Any = err.validator_value
        missing = [k for k in required if k not in instance]
        for key in missing:
            if difflib.get_close_matches(key, [str(k) for k in instance], n=1, cutoff=0.6):
                continue  # the unknown-key error already says "did you mean"
            yield ConfigError(f"{_where(path)} is missing required key {key!r}",
                              positions.at(ptr))
        return

    if validator == "type":
        yield ConfigError(
            f"{_where(path)} must be {_expected(sch)}, not "
            f"{_TYPE_NAMES.get(_type_of(instance), _type_of(instance))}", positions.at(ptr))
        return

    if validator == "enum":
        msg = f"{_where(path)} is {instance!r}; expected {_expected(sch)}"
        close = difflib.get_close_matches(str(instance), [str(v) for v in sch["enum"]], n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        yield ConfigError(msg, positions.at(ptr))
        return

    if validator in ("minProperties", "maxProperties") and path == ["trigger"]:
        yield ConfigError("trigger must name exactly one trigger, e.g. trigger: {http: {}}",
                          positions.at(ptr))
        return

    yield ConfigError(f"{_where(path)}: {err.message}", positions.at(ptr))


def _branches(err: ValidationError) -> list[tuple[int, list[ValidationError]]]:
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in err.context or ():
        index = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        by_branch.setdefault(int(index), []).append(sub)
    return sorted(by_branch.items())
