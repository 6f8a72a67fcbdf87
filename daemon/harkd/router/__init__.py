"""The shared backend router: model aliases, fallback chains, retries, cooldowns, limits.

``Router.from_settings(settings, services)`` builds it from ``harkd.yaml``'s ``models:``
and ``router:``; ``await router.complete(ChatRequest(...))`` answers whole and
``router.stream(request)`` yields text chunks (its ``response`` is set at the end).
Observers (``router.observers``, or :func:`router_observers` for the whole daemon) are
told of every :class:`Attempt`.
"""

from __future__ import annotations

from .calls import Observer
from .config import Deployment, Policy
from .core import Router, router_observers
from .errors import (
    BackendFailed,
    BackendTimeout,
    CloudForbidden,
    MissingApiKey,
    NoDeployment,
    UnknownAlias,
)
from .streaming import ChatStream
from .types import Attempt, ChatRequest, ChatResponse, Message, ToolCall, Usage

__all__ = [
    "Attempt",
    "BackendFailed",
    "BackendTimeout",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "CloudForbidden",
    "Deployment",
    "Message",
    "MissingApiKey",
    "NoDeployment",
    "Observer",
    "Policy",
    "Router",
    "ToolCall",
    "UnknownAlias",
    "Usage",
    "router_observers",
]
