"""What the router raises. All subclass :class:`~harkd.errors.BackendError` or
:class:`~harkd.errors.NotFound`, so callers can catch the router's failures in one place.

``status`` is the HTTP status the gateway and a failed run answer with. Messages never
carry secrets: they name a missing API key's setting, not its value.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import BackendError, NotFound


class UnknownAlias(NotFound):
    """A request named a model alias that ``models:`` does not define. Raised by the router."""

    status = 404

    def __init__(self, alias: str, known: Iterable[str]) -> None:
        names = sorted(known)
        close = difflib.get_close_matches(alias, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(names) or "none"
        super().__init__(f"unknown model alias {alias!r}{hint} (aliases: {listing})")
        self.alias = alias
        self.suggestion = close[0] if close else None


class BackendFailed(BackendError):
    """One deployment failed one attempt. Raised by backends; the router retries or moves on.

    ``status`` is the upstream HTTP status when there was one; ``retry_after`` is the
    upstream's ``Retry-After`` in seconds; ``breaker`` says whether the failure is the
    deployment's fault (and so counts towards its cooldown) rather than the request's.
    """

    status = 502

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None,
                 retry_after: float | None = None, breaker: bool = True) -> None:
        super().__init__(message, retryable=retryable)
        self.upstream_status = status
        self.retry_after = retry_after
        self.breaker = breaker

    @property
    def outcome(self) -> str:
        return "rate_limited" if self.upstream_status == 429 else "error"


class BackendTimeout(BackendFailed, TimeoutError):
    """A deployment did not answer (or send its first token) in time. Raised by the router."""

    status = 504

    @property
    def outcome(self) -> str:
        return "timeout"


class MissingApiKey(BackendFailed):
    """A cloud deployment has no API key configured. Raised by backends before any request."""

    def __init__(self, deployment: str, setting: str) -> None:
        super().__init__(f"deployment {deployment} has no API key: set api_key "
                         f"(e.g. api_key: ${{env:{setting}}}) or the environment variable "
                         f"{setting}", retryable=False)


class NoDeployment(BackendError):
    """Every deployment of an alias failed, was cooling down or was over its limits.

    Raised by the router after the whole fallback chain; ``attempts`` says why each one
    failed and ``status`` fits the last reason (504 timeout, 429 rate limited, 502 else).
    """

    def __init__(self, message: str, *, status: int = 502, retry_after: float | None = None,
                 attempts: tuple[object, ...] = ()) -> None:
        super().__init__(message, retryable=False)
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts


class CloudForbidden(NoDeployment):
    """The caller forbids cloud deployments and the alias has no other. Raised by the router."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"model alias {alias!r} has only cloud deployments and this "
                         "pipeline forbids them (allow_cloud: false)", status=403)
