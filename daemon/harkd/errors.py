"""The one exception root of harkd and its branches.

Every error harkd raises on purpose subclasses :class:`HarkError`. Only the run boundary
(:mod:`harkd.core.engine`) catches broadly, and it records what it caught on the run.
"""

from __future__ import annotations

from .records import dataclass


class HarkError(Exception):
    """Root of every error harkd raises on purpose."""


@dataclass(frozen=True)
class Position:
    """Where in a file a problem is: 1-based line and column, and the JSON pointer."""

    file: str
    line: int = 1
    column: int = 1
    pointer: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ConfigError(HarkError, ValueError):
    """A pipeline file or ``harkd.yaml`` is invalid.

    Raised by the loader, the validator and step and trigger builders. ``str()`` gives the
    ``FILE:LINE:COL: message`` form that ``harkd check`` prints.
    """

    def __init__(self, message: str, position: Position | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position or Position("<unknown>")

    @property
    def file(self) -> str:
        return self.position.file

    @property
    def line(self) -> int:
        return self.position.line

    @property
    def column(self) -> int:
        return self.position.column

    @property
    def pointer(self) -> str:
        return self.position.pointer

    def __str__(self) -> str:
        where = f" (at {self.pointer})" if self.pointer else ""
        return f"{self.position}: {self.message}{where}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "message": self.message,
        }


class ConfigErrors(HarkError, ValueError):
    """Several :class:`ConfigError` of one file, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class RunError(HarkError, RuntimeError):
    """A run failed. Raised by steps; the engine records it on the run.

    ``status`` is the HTTP status a synchronous webhook answers with.
    """

    status = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class StepError(RunError):
    """A step could not do its work (bad template data, an upstream that failed, ...)."""

    status = 502


class RunTimeout(RunError, TimeoutError):
    """A run outlived its pipeline's ``timeout``. Raised by the engine."""

    status = 504


class Busy(RunError):
    """A pipeline is at its concurrency limit. Raised by the concurrency gate.

    ``retry_after`` is the number of seconds the client is told to wait.
    """

    status = 429

    def __init__(self, message: str, *, status: int = 429, retry_after: int = 1) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class NotFound(HarkError, LookupError):
    """A pipeline, run or model that was asked for does not exist."""


class BackendError(HarkError, RuntimeError):
    """A model backend failed. Raised by the router; ``retryable`` says if a retry may help."""

    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in an exception group (a cancellation only if there is
    nothing else): what an anyio task group raised, as the one error it stands for."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, Exception):
            return exc
    return leaves[0] if leaves else group
