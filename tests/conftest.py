"""Shared fixtures: tests run under anyio's pytest plugin on asyncio."""

from __future__ import annotations

import os

import pytest

# as harkd.cli.main sets it for the daemon, before anything imports numpy: the daemons
# tests run in this process then do their matrix products on one OpenBLAS thread too
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
