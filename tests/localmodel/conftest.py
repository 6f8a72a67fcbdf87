"""One real gemma-3-270m worker for the whole session, shared by the model tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from harkd.localmodel import LocalModel, Options

#: fast health checks, so a hang is noticed within a few seconds
TEST_OPTIONS = Options(health_interval=0.5, health_timeout=1.5, health_failures=2)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def options() -> Options:
    return TEST_OPTIONS


@pytest.fixture(scope="session")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
async def model(state: Path) -> AsyncIterator[LocalModel]:
    m = LocalModel("gemma-3-270m", state, TEST_OPTIONS)
    await m.ensure()
    try:
        yield m
    finally:
        await m.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session

