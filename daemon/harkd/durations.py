"""Durations as users write them: ``600ms``, ``30s``, ``5m``, ``1h``, or a number of seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

SCHEMA = {
    "description": "A duration: a number of seconds, or a string such as 600ms, 30s, 5m, 1h.",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
    ],
}


def seconds(value: float | int | str) -> float:
    """Parse a duration into seconds; raises ValueError on a malformed one."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"not a duration: {value!r} (write e.g. 600ms, 30s, 5m)")
    return float(m.group(1)) * _UNITS[m.group(2)]
