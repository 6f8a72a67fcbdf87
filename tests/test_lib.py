"""harkd as a library: ask, stream and chat over the router, sync and async.

The upstream is harkd's scripted OpenAI-compatible server (a fault-injection peer), so the
answers are known; the embedded model's own test lives in tests/router.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import harkd
from harkd.router import UnknownAlias
from harkd.runtime import Runtime
from harkd.settings import Settings
from harkd.testing_upstream import Reply, ScriptedUpstream


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    """A scripted upstream on the runtime-independent loop of its own thread."""
    import threading

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    up = ScriptedUpstream()
    asyncio.run_coroutine_threadsafe(up.__aenter__(), loop).result()
    yield up
    asyncio.run_coroutine_threadsafe(up.__aexit__(None, None, None), loop).result()
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def runtime(tmp_path: Path, upstream: ScriptedUpstream) -> Iterator[Runtime]:
    models = {
        "default": [{"model": "openai/first", "api_base": upstream.v1, "api_key": "k"},
                    {"model": "openai/second", "api_base": upstream.v1, "api_key": "k"}],
    }
    rt = Runtime(Settings(state=tmp_path / "state", models=models))
    yield rt
    rt.close()


def test_ask_returns_a_response_object(runtime: Runtime, upstream: ScriptedUpstream) -> None:
    upstream.plan("first", *[Reply(status=500)] * 5)
    answer = harkd.ask("hello there", runtime=runtime)
    assert answer.text == "echo: hello there"
    assert answer.alias == "default"
    assert "second" in answer.deployment and answer.fallbacks == 1
    assert answer.usage.completion_tokens > 0 and answer.latency > 0


def test_ask_unknown_alias_says_did_you_mean(runtime: Runtime) -> None:
    with pytest.raises(UnknownAlias, match="default"):
        harkd.ask("x", model="defualt", runtime=runtime)


def test_stream_yields_chunks(runtime: Runtime) -> None:
    chunks = list(harkd.stream("one two three", runtime=runtime))
    assert len(chunks) > 1 and "".join(chunks) == "echo: one two three"


def test_chat_keeps_history_and_round_trips(runtime: Runtime, tmp_path: Path,
                                            upstream: ScriptedUpstream) -> None:
    c = harkd.chat(system="Be brief.", runtime=runtime)
    assert c.send("first").text == "echo: first"
    assert c.send("second").text == "echo: second"
    sent = upstream.last().body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    c.save(tmp_path / "chat.json")
    again = harkd.Chat.load(tmp_path / "chat.json", runtime=runtime)
    assert again.messages == c.messages and again.system == "Be brief."


def test_sync_api_inside_a_running_loop(runtime: Runtime) -> None:
    async def notebook_cell() -> str:
        return harkd.ask("from a loop", runtime=runtime).text

    assert asyncio.run(notebook_cell()) == "echo: from a loop"


@pytest.mark.anyio
async def test_async_twins(runtime: Runtime) -> None:
    answer = await harkd.ask_async("async", runtime=runtime)
    assert answer.text == "echo: async"
    got: AsyncIterator[str] = harkd.stream_async("streamed", runtime=runtime)
    assert "".join([c async for c in got]) == "echo: streamed"
    c = harkd.achat(runtime=runtime)
    assert (await c.asend("hi")).text == "echo: hi"
    await runtime.aclose()


def test_pipeline_with_llm_step_composed_in_code(runtime: Runtime) -> None:
    pipe = harkd.template("Summarise: {{ input }}") | harkd.llm(model="default")
    assert pipe.run("a long text", runtime=runtime) == "echo: Summarise: a long text"
    streamed = pipe | harkd.template("{{ input }}!")
    assert streamed.run("x", runtime=runtime) == "echo: Summarise: x!"
    chunks = list((harkd.template("{{ input }}") | harkd.llm(stream=True)).stream(
        "a b c", runtime=runtime))
    assert "".join(chunks) == "echo: a b c"


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, harkd\nheavy = [m for m in ('aiohttp', 'litellm', 'jinja2', "
            "'llama_cpp', 'numpy') if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout.strip()
    assert out == "[]"
