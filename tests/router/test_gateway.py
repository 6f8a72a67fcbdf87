"""The OpenAI-compatible gateway, driven by the official ``openai`` client against a real
daemon whose aliases point at the scripted upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from harkd.testing import run_daemon, wait_until
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio

TOKEN = "gw-token-0123456789"


def config(up: ScriptedUpstream, extra: str = "") -> str:
    return f"""
server: {{token: {TOKEN}}}
models:
  fast:
    - {{model: openai/m1, api_base: "{up.v1}"}}
    - {{model: openai/m2, api_base: "{up.v1}"}}
{extra}
router: {{backoff: 1ms, retries: 0}}
"""


def client(base: str, key: str = TOKEN) -> Any:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


async def test_chat_models_stream_and_fallback(tmp_path: Path,
                                               upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, config=config(upstream)) as d:
        c = client(d.base)
        models = await c.models.list()
        assert {m.id for m in models.data} == {"default", "fast"}

        upstream.plan("m1", Reply(status=500))
        resp = await c.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "ping"}], max_tokens=9)
        assert resp.choices[0].message.content == "echo: ping"
        assert resp.usage is not None and resp.usage.prompt_tokens == 7
        assert upstream.last("m2").body["max_tokens"] == 9

        stream = await c.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "a b c"}], stream=True,
            stream_options={"include_usage": True})
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        assert "".join(parts) == "echo: a b c"
        assert len(parts) > 1 and usage is not None


async def test_stream_falls_back_before_first_token(tmp_path: Path,
                                                    upstream: ScriptedUpstream) -> None:
    extra = f"""  slow:
    - {{model: openai/m1, api_base: "{upstream.v1}", first_token_timeout: 200ms}}
    - {{model: openai/m2, api_base: "{upstream.v1}"}}"""
    async with run_daemon(tmp_path, config=config(upstream, extra)) as d:
        upstream.plan("m1", Reply(first_token_delay=5))
        stream = await client(d.base).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "x"}], stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                        if ch.choices])
        assert text == "echo: x"
        assert upstream.calls("m2") == 1


async def test_tools_pass_through(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    async with run_daemon(tmp_path, config=config(upstream)) as d:
        c = client(d.base)
        upstream.plan("m1", Reply(tool_calls=(("get_weather", {"city": "Paris"}),)))
        resp = await c.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "weather?"}], tools=tools)
        call = resp.choices[0].message.tool_calls[0]
        assert resp.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert upstream.last("m1").body["tools"] == tools

        upstream.plan("m1", Reply(tool_calls=(("get_weather", {"city": "Oslo"}),)))
        stream = await c.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "weather?"}], tools=tools,
            stream=True)
        calls: list[Any] = []
        finish = None
        async for chunk in stream:
            if chunk.choices:
                calls += chunk.choices[0].delta.tool_calls or []
                finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert [json.loads(x.function.arguments) for x in calls] == [{"city": "Oslo"}]

        resp = await c.chat.completions.create(model="fast", messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}])
        assert resp.choices[0].message.content == "tool said: sunny"


async def test_errors_and_token(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, config=config(upstream)) as d:
        with pytest.raises(openai.AuthenticationError):
            await client(d.base, "wrong").models.list()
        c = client(d.base)
        with pytest.raises(openai.NotFoundError, match="did you mean 'fast'"):
            await c.chat.completions.create(model="fsat",
                                            messages=[{"role": "user", "content": "x"}])
        upstream.plan("m1", Reply(status=429, retry_after="1"))
        upstream.plan("m2", Reply(status=429, retry_after="1"))
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="fast",
                                            messages=[{"role": "user", "content": "x"}])
        async with d.http.post(d.url("/v1/chat/completions"), data=b"{not json",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400
            assert "error" in await r.json()


async def test_reload_swaps_the_router(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, config=config(upstream)) as d:
        c = client(d.base)
        await c.chat.completions.create(model="fast",
                                        messages=[{"role": "user", "content": "x"}])
        cfg = tmp_path / "harkd.yaml"
        cfg.write_text(cfg.read_text().replace("fast:", "quick:"))

        async def renamed() -> bool:
            return {m.id for m in (await c.models.list()).data} == {"default", "quick"}

        await wait_until(renamed, timeout=20)
        resp = await c.chat.completions.create(model="quick",
                                               messages=[{"role": "user", "content": "y"}])
        assert resp.choices[0].message.content == "echo: y"


async def test_json_that_orjson_refuses_goes_through_the_standard_library(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    # orjson (the gateway's JSON) reads no NaN and writes no integer past 64 bits: this
    # body is read by json.loads, and its seed then written by json.dumps, exactly
    big = 2**70 + 1
    body = ('{"model": "fast", "messages": [{"role": "user", "content": "x"}], '
            f'"temperature": NaN, "seed": {big}}}').encode()
    async with run_daemon(tmp_path, config=config(upstream)) as d:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with d.http.post(d.url("/v1/chat/completions"), data=body,
                               headers=headers) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["choices"][0]["message"]["content"] == "echo: x"
        assert upstream.last("m1").body["seed"] == big
        async with d.http.post(d.url("/v1/chat/completions"), data=b'{"model": }',
                               headers=headers) as r:
            assert r.status == 400
            assert "Expecting value: line 1 column 11" in (await r.json())["error"]["message"]


async def test_a_text_chunk_is_the_json_of_its_chunk_document() -> None:
    # The stream's text chunks are made around their text, not encoded whole: the bytes
    # must be those of the chunk's document.
    from harkd.http.gateway import text_chunks
    from harkd.values import json_bytes

    for text in ["Hello", ' "quoted" \\ back\\slash', "line\nbreak\t", "żółw 🐢 \u2028", ""]:
        doc = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 17,
               "model": "fast/ü \"q\"", "choices": [
                   {"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        assert text_chunks("chatcmpl-x", 17, "fast/ü \"q\"")(text) == \
            b"data: %s\n\n" % json_bytes(doc)
