"""Helpers the router tests import (conftest.py holds the fixtures)."""

from __future__ import annotations

from typing import Any

from harkd.router import ChatRequest


def ask(text: str = "hi", model: str = "a", **kw: Any) -> ChatRequest:
    """A one-message request for alias ``model``."""
    return ChatRequest(model=model, messages=({"role": "user", "content": text},), **kw)
