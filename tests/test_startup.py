"""What harkd run's start leaves for later: the router loads with the first LLM call, and
the metrics still hear of every call it makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harkd.daemon import ROUTER_OBSERVERS
from harkd.router import router_observers
from harkd.router.core import OBSERVERS_KEY
from harkd.testing import run_daemon

pytestmark = pytest.mark.anyio


async def test_the_metrics_observe_the_router_that_loads_later(tmp_path: Path) -> None:
    assert ROUTER_OBSERVERS == OBSERVERS_KEY
    config = "models:\n  m:\n    - {model: openai/x, api_base: 'http://127.0.0.1:9/v1'}\n"
    async with run_daemon(tmp_path, config=config) as d:
        router = d.daemon.services.router
        assert d.daemon.metrics.observe_llm_call in router_observers(d.daemon.services)
        assert router.observers is router_observers(d.daemon.services)
