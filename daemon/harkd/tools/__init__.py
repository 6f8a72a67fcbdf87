"""Function calling: the tool registry, the built-in tools and the tool loop."""

from __future__ import annotations

from .registry import Tool, ToolContext, ToolError, available, from_function, tool

__all__ = ["Tool", "ToolContext", "ToolError", "available", "from_function", "tool"]
