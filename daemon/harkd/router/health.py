"""Per-deployment state: the cooldown circuit breaker and the concurrency and rate limits.

Both are plain objects owned by one router and used from its event loop only, so they
need no locks. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import collections
import time
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
WINDOW = 60.0


class Breaker:
    """Opens after ``failures`` consecutive failures and stays open for ``cooldown``.

    Once the cooldown is over one call is let through as a probe (half-open): its success
    closes the breaker, its failure opens it for another cooldown. A ``Retry-After`` from
    the deployment can hold it open longer (:meth:`hold`).
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = max(1, failures)
        self.cooldown = cooldown
        self.state: BreakerState = "closed"
        self.consecutive = 0
        self.until = 0.0
        self._probing = False

    def allow(self, now: float) -> bool:
        """Whether a call may go to the deployment now; the half-open probe claims itself."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now < self.until:
                return False
            self.state = "half_open"
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def available(self, now: float) -> bool:
        """Like :meth:`allow`, without claiming the probe."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now >= self.until
        return not self._probing

    def success(self) -> None:
        self.state = "closed"
        self.consecutive = 0
        self._probing = False

    def failure(self, now: float) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.threshold:
            self.state = "open"
            self.until = now + self.cooldown
            self._probing = False

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled, a request-side error)."""
        self._probing = False

    def hold(self, now: float, seconds: float) -> None:
        """Keep the deployment out of rotation for ``seconds`` (a long Retry-After)."""
        self.state = "open"
        self.until = max(self.until, now + seconds)
        self._probing = False


class Limiter:
    """``max_concurrent`` requests at once, ``rpm`` requests and ``tpm`` tokens per minute."""

    def __init__(self, max_concurrent: int | None, rpm: int | None, tpm: int | None) -> None:
        self.max_concurrent = max_concurrent
        self.rpm = rpm
        self.tpm = tpm
        self.active = 0
        #: in a cluster whose Redis is down: the replicas that split the limits
        self.share = 1
        self._requests: collections.deque[float] = collections.deque()
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._token_sum = 0

    def _expire(self, now: float) -> None:
        cut = now - WINDOW
        while self._requests and self._requests[0] <= cut:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= cut:
            self._token_sum -= self._tokens.popleft()[1]

    def wait_hint(self, now: float, tokens: int) -> float | None:
        """0 if a call of ``tokens`` may start now; seconds until a rate window frees up;
        ``None`` if only a finishing call can free a slot."""
        self._expire(now)
        share = self.share
        if self.max_concurrent is not None and self.active >= -(-self.max_concurrent // share):
            return None
        wait = 0.0
        if self.rpm is not None and len(self._requests) >= -(-self.rpm // share):
            wait = max(wait, self._requests[0] + WINDOW - now)
        if self.tpm is not None and self._token_sum and \
                self._token_sum + tokens > self.tpm / share:
            wait = max(wait, self._tokens[0][0] + WINDOW - now)
        return wait

    def acquire(self, now: float, tokens: int) -> None:
        self.active += 1
        if self.rpm is not None:
            self._requests.append(now)
        if self.tpm is not None:
            self._tokens.append((now, tokens))
            self._token_sum += tokens

    def release(self, estimated: int, actual: int | None) -> None:
        """A call ended; correct the token window with the tokens it really used."""
        self.active -= 1
        if self.tpm is not None and actual is not None and actual != estimated:
            now = time.monotonic()
            self._tokens.append((now, actual - estimated))
            self._token_sum += actual - estimated
