"""The worker's OpenAI-compatible API, answered by the real gemma-3-270m."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from harkd.localmodel import LocalModel
from harkd.testing import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.model]

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


async def _sse(resp: aiohttp.ClientResponse) -> list[Any]:
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[Any] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_chat_answers_paris(model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/chat/completions",
                         json={"model": "gemma-3-270m", "messages": FRANCE}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gemma-3-270m"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert "User:" not in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_streams_paris(model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/chat/completions",
                         json={"messages": FRANCE, "stream": True,
                               "stream_options": {"include_usage": True}}) as resp:
        events = await _sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in chunks if c["choices"])
    assert "Paris" in text
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"]]) > 2
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(("question", "word"), [
    ("What colour is grass?", "green"),
    ("What is the capital of Japan?", "Tokyo"),
])
async def test_other_simple_questions(model: LocalModel, http: aiohttp.ClientSession,
                                      question: str, word: str) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": question}]}) as resp:
        body = await resp.json()
    assert word.lower() in body["choices"][0]["message"]["content"].lower()


async def test_raw_completion(model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/completions",
                         json={"prompt": "One, two, three,", "max_tokens": 5}) as resp:
        body = await resp.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 5


async def test_raw_completion_streams(model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/completions", json={
            "prompt": "The capital of France is", "max_tokens": 6, "stream": True}) as resp:
        events = await _sse(resp)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]).strip()


async def test_models_and_health(model: LocalModel, http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.get(f"{url}/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["gemma-3-270m"]
    async with http.get(f"{url}/health") as resp:
        health = await resp.json()
    assert health["status"] == "ok" and health["model"] == "gemma-3-270m"


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"messages": []}',
                                  b'{"messages": [{"role": "user", "content": "x"}], '
                                  b'"max_tokens": "many"}'])
async def test_bad_requests_get_400_in_openai_shape(model: LocalModel, body: bytes,
                                                    http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    async with http.post(f"{url}/v1/chat/completions", data=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


async def test_long_conversations_drop_the_oldest_turns(model: LocalModel,
                                                        http: aiohttp.ClientSession) -> None:
    url = await model.ensure()
    filler = "word " * 400
    messages = [{"role": "user", "content": filler}, {"role": "assistant", "content": "Ok."}
                ] * 4 + FRANCE
    async with http.post(f"{url}/v1/chat/completions", json={"messages": messages}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["usage"]["prompt_tokens"] < 2048


async def test_client_disconnect_stops_generation(model: LocalModel,
                                                  http: aiohttp.ClientSession) -> None:
    url = await model.ensure()

    async def health() -> dict[str, Any]:
        async with http.get(f"{url}/health") as resp:
            result: dict[str, Any] = await resp.json()
            return result

    before = (await health())["cancelled"]
    resp = await http.post(f"{url}/v1/completions", json={
        "prompt": "Once upon a time", "max_tokens": 1000, "stream": True})
    await resp.content.readline()  # the first token arrived: generation runs
    resp.close()

    async def cancelled() -> bool:
        h = await health()
        return bool(h["cancelled"] > before and h["busy_s"] == 0)

    await wait_until(cancelled, timeout=60)
    async with http.post(f"{url}/v1/chat/completions", json={"messages": FRANCE}) as again:
        assert "Paris" in (await again.json())["choices"][0]["message"]["content"]
