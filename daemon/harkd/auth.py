"""Trigger authentication: HMAC-SHA256 signatures, bearer tokens, or an explicit none.

Comparisons are constant-time. A failed check raises :class:`Unauthorized`, which the
trigger answers with 401 and a message, before any step runs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from .errors import HarkError
from .records import dataclass

AUTH_SCHEMA: dict[str, Any] = {
    "description": "Who may start a run: none, an HMAC signature, or a bearer token.",
    "anyOf": [
        {"const": "none"},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "hmac": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secret"],
                    "properties": {
                        "secret": {"type": "string", "minLength": 1},
                        "header": {"type": "string", "default": "X-Hub-Signature-256"},
                        "prefix": {"type": "string", "default": "sha256="},
                        "timestamp_header": {
                            "type": "string",
                            "description": "Header with a Unix timestamp that is signed "
                                           "too; requests outside `tolerance` are refused.",
                        },
                        "tolerance": {"type": ["string", "number"], "default": "5m"},
                        "signed": {
                            "type": "string",
                            "description": "What is signed: {body} and {timestamp} are "
                                           "replaced. Default {body}, or "
                                           "{timestamp}.{body} with a timestamp header.",
                        },
                    },
                },
                "bearer": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["token"],
                    "properties": {
                        "token": {"type": "string", "minLength": 1},
                        "query": {"type": "string",
                                  "description": "Also accept the token in this query "
                                                 "parameter (for WebSocket clients)."},
                    },
                },
            },
        },
    ],
}


class Unauthorized(HarkError, PermissionError):
    """A request failed its trigger's auth check. Raised by :class:`Auth` checks."""


@dataclass(frozen=True)
class Auth:
    """A compiled auth rule."""

    kind: str = "none"
    secret: bytes = b""
    header: str = ""
    prefix: str = ""
    timestamp_header: str | None = None
    tolerance: float = 300.0
    signed: str = "{body}"
    query: str | None = None

    def describe(self) -> str:
        return self.kind

    def check(self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> None:
        if self.kind == "none":
            return
        if self.kind == "bearer":
            got = headers.get("Authorization", "")
            token = got[7:] if got[:7].lower() == "bearer " else ""
            if not token and self.query:
                token = query.get(self.query, "")
            if not token:
                raise Unauthorized("missing bearer token (Authorization: Bearer ...)")
            if not hmac.compare_digest(token.encode(), self.secret):
                raise Unauthorized("invalid bearer token")
            return
        self._check_hmac(headers, body)

    def _check_hmac(self, headers: Mapping[str, str], body: bytes) -> None:
        got = headers.get(self.header)
        if not got:
            raise Unauthorized(f"missing signature header {self.header}")
        stamp = ""
        if self.timestamp_header:
            stamp = headers.get(self.timestamp_header, "")
            try:
                age = abs(time.time() - float(stamp))
            except ValueError:
                raise Unauthorized(f"missing or malformed timestamp header "
                                   f"{self.timestamp_header}") from None
            if age > self.tolerance:
                raise Unauthorized(f"timestamp is {age:.0f}s old, outside the "
                                   f"{self.tolerance:g}s replay window")
        head, _, tail = self.signed.partition("{body}")
        message = head.replace("{timestamp}", stamp).encode() + body + \
            tail.replace("{timestamp}", stamp).encode()
        want = self.prefix + hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(got.strip().encode(), want.encode()):
            raise Unauthorized(f"signature in {self.header} does not match the body")


def build_auth(raw: Any, seconds: Any) -> Auth:
    """Compile the ``auth`` parameter (already schema-valid). ``seconds`` parses durations."""
    if raw is None or raw == "none":
        return Auth()
    if "bearer" in raw:
        b = raw["bearer"]
        return Auth("bearer", secret=b["token"].encode(), query=b.get("query"))
    h = raw["hmac"]
    ts = h.get("timestamp_header")
    return Auth(
        "hmac",
        secret=h["secret"].encode(),
        header=h.get("header", "X-Hub-Signature-256"),
        prefix=h.get("prefix", "sha256="),
        timestamp_header=ts,
        tolerance=seconds(h.get("tolerance", "5m")),
        signed=h.get("signed", "{timestamp}.{body}" if ts else "{body}"),
    )


def sign(secret: str, body: bytes, prefix: str = "sha256=") -> str:
    """The signature a sender puts in the header (for tests and clients)."""
    return prefix + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
