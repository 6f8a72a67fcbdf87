"""Probe a running daemon's ``/healthz``: the container health check, with no curl needed.

Standard library only, and no event loop, because a health check runs every few seconds
and should start and finish quickly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .records import dataclass
from .settings import Settings, split_listen

#: addresses that mean "every interface" are probed on the loopback of the same family
_WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Health:
    """The outcome of one probe: ``ok`` and a one-line ``detail`` for a person."""

    ok: bool
    detail: str


def healthz_url(settings: Settings) -> str:
    """The ``/healthz`` URL of the daemon that ``settings`` describe."""
    host, port = split_listen(settings.listen)
    host = _WILDCARD.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def probe(url: str, timeout: float = 5.0) -> Health:
    """GET ``url``; healthy when it answers 200 with ``{"status": "ok"}``."""
    request = urllib.request.Request(url, headers={"User-Agent": "harkd-health"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read(4096)
            status = resp.status
    except urllib.error.HTTPError as exc:
        return Health(False, f"{url} answered {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Health(False, f"{url}: {reason}")
    try:
        answer = json.loads(body).get("status")
    except (ValueError, AttributeError):
        answer = None
    if status != 200 or answer != "ok":
        return Health(False, f"{url} answered {status} {body[:80]!r}")
    return Health(True, f"{url} ok")
