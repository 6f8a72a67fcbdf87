"""Fixtures of the service tests (they live in helpers.py with the helpers they use)."""

from __future__ import annotations

from .helpers import notify_socket, upstream

__all__ = ["notify_socket", "upstream"]
