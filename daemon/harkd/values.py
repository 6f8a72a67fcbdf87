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
