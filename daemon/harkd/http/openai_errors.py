"""Errors in the shape OpenAI clients parse, for every ``/v1`` route."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..secrets import REDACTOR


def openai_error(status: int, message: str, kind: str = "invalid_request_error",
                 code: str | None = None, headers: Mapping[str, str] | None = None
                 ) -> web.Response:
    """An error in the shape OpenAI clients parse."""
    return web.json_response({"error": {"message": REDACTOR(message), "type": kind,
                                        "code": code, "param": None}},
                             status=status, headers=headers)
