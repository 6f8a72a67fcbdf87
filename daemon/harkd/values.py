"""How run values that are not plain JSON (speech, audio, bytes) appear in JSON.

A run's input or output may be an object: an utterance from a microphone, the speech a
``tts`` step made. Wherever harkd writes JSON (the run log, an HTTP or WebSocket answer,
``harkd invoke``) it encodes such a value with :func:`jsonable`, which asks the object for
its ``as_value()`` (a small mapping such as ``{"type": "audio", "seconds": 2.1, ...}``)
instead of printing its repr.
"""

from __future__ import annotations

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
