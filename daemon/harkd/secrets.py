"""``${env:NAME}`` substitution and the redaction of the secrets it brings in.

Values substituted from the environment under a secret-looking key (token, secret, key,
password, auth, ...) or long enough to be a credential are remembered by
:data:`REDACTOR`; logs, errors, the run log and ``/api`` pass text through it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .values import nodes
from .yamlfile import Positions, escape

_REF = re.compile(r"\$(\$?)\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SECRET_KEY = re.compile(r"secret|token|key|passw|auth|credential|signature", re.I)
MASK = "***"


class Redactor:
    """Replaces known secret values in text. Thread-safe; values only ever accumulate."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        #: every value as one alternation, or None while there are none (a caller on a hot
        #: path reads it and calls ``pattern.sub(MASK, text)`` itself: the run log's writer
        #: redacts four texts a run, and a call of this object, a Python frame, costs 0.7k
        #: instructions where reading the attribute costs a few dozen)
        self.pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < 4 or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        pattern = self.pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def value(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if self.pattern is None:
            return obj
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, Mapping):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj


REDACTOR = Redactor()


def substitute(
    data: Any,
    positions: Positions,
    environ: Mapping[str, str] | None = None,
    redactor: Redactor = REDACTOR,
) -> tuple[Any, list[ConfigError]]:
    """Resolve ``${env:NAME}`` and ``${env:NAME:-default}`` in every string of ``data``.

    ``$${env:X}`` stays as the literal text ``${env:X}``. Returns the new data and one
    error per unset variable without a default.
    """
    if not _refers(data):  # most documents: no copy, and no pointer made per value
        return data, []
    env = os.environ if environ is None else environ
    errors: list[ConfigError] = []

    def text(value: str, ptr: str) -> str:
        if "${" not in value:
            return value

        def one(m: re.Match[str]) -> str:
            if m.group(1):
                return m.group(0)[1:]
            name, default = m.group(2), m.group(3)
            got = env.get(name)
            if got is None:
                if default is None:
                    errors.append(ConfigError(
                        f"environment variable {name} is not set "
                        f"(write ${{env:{name}:-default}} to give a default)",
                        positions.at(ptr),
                    ))
                    return ""
                got = default
            if _SECRET_KEY.search(ptr) or len(got) >= 16:
                redactor.add(got)
            return got

        return _REF.sub(one, value)

    def walk(obj: Any, ptr: str) -> Any:
        if isinstance(obj, str):
            return text(obj, ptr)
        if isinstance(obj, dict):
            return {k: walk(v, f"{ptr}/{escape(str(k))}") for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, f"{ptr}/{i}") for i, v in enumerate(obj)]
        return obj

    return walk(data, ""), errors


def _refers(data: Any) -> bool:
    """Whether a string in ``data`` holds ``${`` (what :func:`substitute` looks for)."""
    return any(isinstance(value, str) and "${" in value for value in nodes(data))
