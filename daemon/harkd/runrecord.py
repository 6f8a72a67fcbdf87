"""A run as the run log stores it, and back: values as redacted JSON text cut to a size,
the step records, and the rows as the API and the console show them."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .secrets import MASK as MASK_SECRET
from .secrets import REDACTOR
from .values import jsonable, orjson_module, text_encoder

if TYPE_CHECKING:
    from .core.run import Run, RunResult

MARK = "…[truncated]"

#: the standard library's encoder, for what orjson refuses
_STDLIB = text_encoder(jsonable, ascii=False, separators=(",", ":"))


@functools.cache
def _orjson() -> tuple[Any, int]:
    """orjson's ``dumps`` and its options: everything orjson would write in its own way
    (dataclasses, dates, str and dict subclasses) goes to jsonable, as with the standard
    library's encoder. (One cached call per value, not one for the module and one for the
    options.)"""
    orjson = orjson_module()
    return orjson.dumps, int(orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
                             | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _json(value: Any) -> str:
    """``value`` as compact JSON text (UTF-8 as is, run values by
    :func:`~harkd.values.jsonable`), by orjson: a tenth of the standard library's time for
    a webhook's trigger data (2.1 -> 0.2 us). What orjson refuses (integers past 64 bits,
    lone surrogates, values nested too deep) takes the standard library's encoder; unlike
    it, orjson writes NaN and the infinities as null."""
    dumps, option = _orjson()
    try:
        text: str = dumps(value, default=jsonable, option=option).decode()
        return text
    except TypeError:
        return _STDLIB(value)


_ENCODE = _json
#: a string as JSON text (UTF-8 as is), as the encoder above writes it
_STRING = json.encoder.encode_basestring


def encode(value: Any, limit: int) -> tuple[str | None, bool]:
    """``value`` as redacted JSON text of at most ``limit`` characters, and whether it was
    cut. A cut value is no longer valid JSON; readers get it back as a string."""
    if value is None:
        return None, False
    if type(value) is str:
        text = _STRING(value)
    else:
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        try:
            text = _ENCODE(value)
        except (ValueError, TypeError, RecursionError) as exc:
            # (a value that refers to itself): its record says so rather than stopping
            # the writer or the run that made it
            text = _STRING(f"<not JSON: {type(exc).__name__}: {exc}>")
    # REDACTOR's own test, inlined (see Redactor.pattern)
    pattern = REDACTOR.pattern
    if pattern is not None:
        text = pattern.sub(MASK_SECRET, text)
    if len(text) <= limit:
        return text, False
    return text[:limit] + MARK, True


def decode(text: str | None, truncated: bool) -> Any:
    if text is None:
        return None
    if truncated and text.endswith(MARK):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


#: the columns :func:`ended` gives, in its order
ENDED = ("truncated", "status", "duration", "error", "http_status", "output", "steps")


def ended(run: Run, result: RunResult, limit: int) -> tuple[Any, ...]:
    """The encoded columns of a run that has ended, in the order of :data:`ENDED`. No error
    is ``""``, which the run log's statements store as NULL (``NULLIF(?, '')``): Python's
    sqlite3 binds None only after looking for an adapter for it (3.3k instructions with
    3.11's), where ``""`` and the NULLIF cost about 0.3k more than a plain string."""
    output, cut = encode(result.output, limit)
    return (int(cut), result.status, result.duration,
            REDACTOR(result.error) if result.error else "", result.http_status,
            output, _steps(run, limit))


#: step records kept per run (a ``map`` over thousands of items keeps the first ones)
MAX_STEPS = 1000


def _steps(run: Run, limit: int) -> str:
    items: list[dict[str, Any]] = []
    for s in run.steps if len(run.steps) <= MAX_STEPS else run.steps[:MAX_STEPS]:
        item: dict[str, Any] = {"index": s.index, "path": s.path, "kind": s.kind,
                                "started": s.started,
                                "duration_ms": round(s.duration * 1000, 3), "status": s.status}
        if s.name:
            item["name"] = s.name
        if s.detail:
            detail, cut = encode(s.detail, limit)
            item["detail"] = s.detail if not cut else detail
        items.append(item)
    if len(run.steps) > MAX_STEPS:
        items.append({"omitted": len(run.steps) - MAX_STEPS})
    # One encoder call for the list (a plain webhook's one record: 2.1 -> 0.9 us).
    text = _ENCODE(items)
    pattern = REDACTOR.pattern
    return pattern.sub(MASK_SECRET, text) if pattern is not None else text


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """One run as ``/api/runs`` lists it."""
    return {"id": row["id"], "seq": row["seq"], "pipeline": row["pipeline"],
            "version": row["version"], "trigger": row["trigger_kind"],
            "started": row["started"], "status": row["status"],
            "duration_ms": None if row["duration"] is None else round(row["duration"] * 1000, 3),
            "error": row["error"], "http_status": row["http_status"]}


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One run with everything the log keeps, as ``/api/runs/{id}`` shows it."""
    out = summary(row)
    truncated = bool(row["truncated"])
    steps = decode(row["steps"], False) or []
    out.update(trigger_data=decode(row["trigger"], False), input=decode(row["input"], truncated),
               output=decode(row["output"], truncated), truncated=truncated, steps=steps,
               llm=[dict(s["detail"], step=s["index"], path=s.get("path", str(s["index"])))
                    for s in steps
                    if s.get("kind") == "llm" and isinstance(s.get("detail"), dict)])
    return out
