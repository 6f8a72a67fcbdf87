"""The listener's HTTP surfaces: the REST API, the ``/v1`` gateway (chat, audio,
pipelines as models), OpenAPI and the MCP server.

Each module exposes ``setup(app, ...)`` and receives what it needs as arguments; none
imports the daemon. See ``docs/architecture.md``.
"""
