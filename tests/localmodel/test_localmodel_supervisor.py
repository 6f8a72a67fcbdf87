"""The supervisor: one start for concurrent callers, restarts, hangs, shutdown, orphans."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harkd.errors import BackendError
from harkd.localmodel import LocalModel, Options
from harkd.testing import capture_logs, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.model]

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def ask(model: LocalModel, http: aiohttp.ClientSession) -> str:
    url = await model.ensure()
    async with http.post(f"{url}/v1/chat/completions", json={"messages": FRANCE}) as resp:
        body: dict[str, Any] = await resp.json()
    content: str = body["choices"][0]["message"]["content"]
    return content


async def test_concurrent_first_calls_start_once_and_reuse_the_gguf(
        model: LocalModel, state: Path, options: Options) -> None:
    await model.ensure()  # the session's model assembled the GGUF into ``state``
    gguf = state / "models" / "gemma-3-270m-q4_k_m.gguf"
    before = gguf.stat()
    second = LocalModel("gemma-3-270m", state, options)
    try:
        with capture_logs() as logs:
            urls = await asyncio.gather(*(second.ensure() for _ in range(4)))
        events = [e["event"] for e in logs]
        assert len(set(urls)) == 1 and urls[0] != await model.ensure()
        assert events.count("local_model_loading") == 1
        assert events.count("local_model_ready") == 1
        assert "local_model_assembling" not in events
        assert gguf.stat().st_mtime_ns == before.st_mtime_ns
        ready = next(e for e in logs if e["event"] == "local_model_ready")
        assert ready["load_s"] > 0 and ready["url"] == urls[0]
        assert await second.ensure() == urls[0]
        pid = second.pid
        assert pid is not None and alive(pid)
    finally:
        await second.aclose()
    assert not alive(pid)
    assert second.pid is None
    with pytest.raises(BackendError, match="closed"):
        await second.ensure()


async def test_restarts_after_sigkill(model: LocalModel, http: aiohttp.ClientSession) -> None:
    assert "Paris" in await ask(model, http)
    old, restarts = model.pid, model.restarts
    assert old is not None
    with capture_logs() as logs:
        os.kill(old, signal.SIGKILL)
        await wait_until(lambda: model.pid not in (None, old), timeout=120)
        assert "Paris" in await ask(model, http)
    assert model.restarts == restarts + 1
    events = [e["event"] for e in logs]
    assert "local_model_exited" in events and "local_model_ready" in events
    exited = next(e for e in logs if e["event"] == "local_model_exited")
    assert exited["returncode"] == -signal.SIGKILL


async def test_a_hung_worker_is_replaced(model: LocalModel,
                                         http: aiohttp.ClientSession) -> None:
    await model.ensure()
    old = model.pid
    assert old is not None
    with capture_logs() as logs:
        os.kill(old, signal.SIGSTOP)
        try:
            await wait_until(lambda: model.url is not None and model.pid != old, timeout=120)
        finally:
            if alive(old):
                os.kill(old, signal.SIGCONT)
        assert "Paris" in await ask(model, http)
    assert not alive(old)
    hung = next(e for e in logs if e["event"] == "local_model_hung")
    assert hung["pid"] == old


async def test_a_generation_past_the_request_timeout_is_killed(
        model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    old = model.pid
    options = model.options
    model.options = dataclasses.replace(options, request_timeout=1.0)
    try:
        with capture_logs() as logs:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(f"{url}/v1/completions", json={
                        "prompt": "Once upon a time", "max_tokens": 1500}) as resp:
                    await resp.read()
            await wait_until(lambda: model.url is not None and model.pid != old, timeout=120)
    finally:
        model.options = options
    assert any(e["event"] == "local_model_hung" and e["reason"] == "busy" for e in logs)
    assert "Paris" in await ask(model, http)


async def test_the_worker_dies_with_its_parent(state: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from harkd.localmodel import LocalModel, Options

        async def main():
            model = LocalModel("gemma-3-270m", Path({str(state)!r}))
            await model.ensure()
            print("PID", model.pid, flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("PID "):
            line = await asyncio.to_thread(parent.stdout.readline)
            assert line, "the parent exited before its model was ready"
        worker = int(line.split()[1])
        assert alive(worker)
        parent.kill()
        parent.wait()
        await wait_until(lambda: not alive(worker), timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
