"""How run values that are not plain JSON (speech, audio, bytes) appear in JSON.

A run's input or output may be an object: an utterance from a microphone, the speech a
``tts`` step made. Wherever harkd writes JSON (the run log, an HTTP or WebSocket answer,
``harkd invoke``) it encodes such a value with :func:`jsonable`, which asks the object for
its ``as_value()`` (a small mapping such as ``{"type": "audio", "seconds": 2.1, ...}``)
instead of printing its repr.

:func:`json_bytes` and :func:`json_loads` are the hot paths' JSON (orjson, with the
standard library behind it for what orjson refuses).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Value(Protocol):
    """A run value that knows its JSON form."""

    def as_value(self) -> dict[str, Any]: ...


def jsonable(obj: Any) -> Any:
    """``default=`` for :func:`json.dumps`: a value's ``as_value()``, a size for bytes,
    ``str()`` for anything else (dates, paths)."""
    as_value = getattr(obj, "as_value", None)
    if callable(as_value):
        return as_value()
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"type": "bytes", "size": len(obj)}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def nodes(value: Any) -> Iterator[Any]:
    """Every value in a JSON-like document: ``value``, then what its mappings and lists
    hold, depth first (in no promised order)."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def text_encoder(default: Callable[[Any], Any], *, ascii: bool,
                 separators: tuple[str, str]) -> Callable[[Any], str]:
    """``json.dumps(value, default=default, ensure_ascii=ascii, separators=separators)``
    with the standard library's C encoder made once (``json.dumps`` and
    ``JSONEncoder.encode`` make one a call). That encoder has no cycle check: a value
    that refers to itself (or nests too deep) goes to the standard encoder, which raises
    as json.dumps does."""
    slow = json.JSONEncoder(ensure_ascii=ascii, separators=separators, default=default)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python built without _json
        return slow.encode
    strings = json.encoder.encode_basestring_ascii if ascii else json.encoder.encode_basestring
    fast = make(None, default, strings, None, separators[1], separators[0], False, False, True)

    def encode(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except RecursionError:
            return slow.encode(value)

    return encode


# -- JSON on the hot paths (the gateway, the router's OpenAI calls) ----------------------

@functools.cache
def orjson_module() -> Any:
    """The ``orjson`` module, imported at first use (the daemon's start does not need it)."""
    import orjson

    return orjson


def json_bytes(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON, by orjson (about a tenth of ``json.dumps``'s CPU);
    what orjson refuses (integers past 64 bits, say) goes to ``json.dumps``, which raises
    TypeError for what is not JSON."""
    orjson = orjson_module()
    try:
        out: bytes = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return out


def json_loads(data: bytes | str) -> Any:
    """Parse JSON by orjson; what it refuses goes to ``json.loads`` (NaN, UTF-16, or an
    error: json.JSONDecodeError with the standard library's message). Unlike json.loads,
    an integer past 64 bits comes back as a float."""
    try:
        return orjson_module().loads(data)
    except ValueError:
        return json.loads(data)
