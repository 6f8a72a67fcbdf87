"""Scale-out: several harkd replicas behind a load balancer, sharing state through Redis.

``cluster: {redis: redis://HOST:PORT/DB}`` in ``harkd.yaml`` turns it on. Then ``llm``
sessions live in Redis, ``rpm``/``tpm``/``max_concurrent`` are counted across replicas,
breakers and cooldowns are shared, each cron fire runs on one replica, and
``router.cache.store: redis`` shares cached answers. Without ``cluster`` nothing here runs
and the ``redis`` package is never imported: this module is only the inert configuration;
:mod:`harkd.cluster.link` holds the connection and imports ``redis`` when it starts.

When Redis is down or slow each replica goes on with its local state (see
``docs/operations.md`` for exactly what is lost) and reconciles when Redis is back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import SCHEMA, SHARED_KEY, ClusterConfig, config

if TYPE_CHECKING:
    from ..contracts import Services
    from .link import Cluster

__all__ = ["SCHEMA", "SHARED_KEY", "ClusterConfig", "config", "of"]


def of(services: Services) -> Cluster | None:
    """The daemon's cluster link, or None when ``cluster`` is not configured (or the
    process is ``harkd invoke``/``ask``, which use local state)."""
    return services.shared.get(SHARED_KEY)
