"""Helpers the router tests import (conftest.py holds the fixtures)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harkd.router import ChatRequest, Router

#: router settings that make retries instant in tests
FAST = {"backoff": 0.001, "max_backoff": 0.005}

#: what the ``make_router`` fixture gives: ``make(models, **router) -> Router``
MakeRouter = Callable[..., Router]


def ask(text: str = "hi", model: str = "a", **kw: Any) -> ChatRequest:
    """A one-message request for alias ``model``."""
    return ChatRequest(model=model, messages=({"role": "user", "content": text},), **kw)
