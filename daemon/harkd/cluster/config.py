"""The ``cluster`` section of ``harkd.yaml``: its schema and its resolved, inert value."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from .. import durations
from ..records import dataclass

SHARED_KEY = "cluster"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Run as one of several replicas that share state through Redis "
                   "(sessions, rate limits, breakers, cron leases, the response cache).",
    "additionalProperties": False,
    "required": ["redis"],
    "properties": {
        "redis": {"type": "string", "pattern": r"^rediss?://",
                  "description": "redis://[:PASSWORD@]HOST:PORT/DB (use ${env:...} for the "
                                 "password).",
                  "examples": ["redis://127.0.0.1:6379/0"]},
        "replica": {"type": "string", "minLength": 1,
                    "description": "This replica's id in run records and /metrics "
                                   "(default HOSTNAME:PORT)."},
        "prefix": {"type": "string", "minLength": 1, "default": "harkd",
                   "description": "Prefix of every Redis key (several clusters can share "
                                  "one Redis)."},
        "timeout": {**durations.SCHEMA, "default": "250ms",
                    "description": "A Redis command slower than this marks Redis slow; "
                                   "the replica uses local state until it answers fast "
                                   "again."},
        "probe": {**durations.SCHEMA, "default": "1s",
                  "description": "How often Redis is pinged (heartbeat, recovery check)."},
        "cron_offline": {"enum": ["defer", "local"], "default": "defer",
                         "description": "Cron fires while Redis is down: defer them (caught "
                                        "up once by one replica when Redis is back, within "
                                        "grace) or run them locally on every replica."},
    },
}


@dataclass(frozen=True)
class ClusterConfig:
    """The ``cluster`` section, resolved. Inert: no I/O, no ``redis`` import."""

    redis: str = field(repr=False)
    replica: str
    prefix: str = "harkd"
    timeout: float = 0.25
    probe: float = 1.0
    cron_offline: str = "defer"

    @property
    def where(self) -> str:
        """The Redis address without its password (for /readyz and logs)."""
        parts = urlsplit(self.redis)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


def config(extra: Mapping[str, Any], listen: str) -> ClusterConfig | None:
    """The ``cluster`` section of ``harkd.yaml`` (``settings.extra``), or None."""
    raw = extra.get("cluster")
    if not raw:
        return None
    port = listen.rpartition(":")[2]
    return ClusterConfig(
        redis=str(raw["redis"]),
        replica=str(raw.get("replica") or f"{socket.gethostname()}:{port}"),
        prefix=str(raw.get("prefix", "harkd")),
        timeout=durations.seconds(raw.get("timeout", "250ms")),
        probe=durations.seconds(raw.get("probe", "1s")),
        cron_offline=str(raw.get("cron_offline", "defer")),
    )
