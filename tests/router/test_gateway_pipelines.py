"""Pipelines as models (``pipeline/NAME``) on the /v1 gateway, with the official ``openai``
client against a real daemon; the streaming pipeline's model is the scripted upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from harkd.testing import run_daemon
from harkd.testing_upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

TOKEN = "gw-pipelines-token-42"
FILES = {
    "greet": """
gateway: true
trigger: {http: {}}
steps:
  - template: "Hello, {{ input }}! ({{ trigger.messages | length }} messages)"
""",
    "chatty": """
gateway: true
trigger: {http: {}}
steps:
  - llm: {model: fast, stream: true, prompt: "{{ input }}"}
""",
    "tool-only": """
mcp: {description: An MCP tool is a model too.}
trigger: {http: {}}
steps:
  - template: "{{ {'upper': input | upper} }}"
""",
    "broken": """
gateway: true
trigger: {http: {}}
steps:
  - http: {url: "http://127.0.0.1:9/", timeout: 2s}
""",
    "private": """
trigger: {http: {}}
steps:
  - template: secret
""",
}


def config(up: ScriptedUpstream) -> str:
    return f"""
server: {{token: {TOKEN}}}
models:
  fast: [{{model: openai/m1, api_base: "{up.v1}"}}]
router: {{backoff: 1ms, retries: 0}}
"""


def client(base: str) -> Any:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=TOKEN, max_retries=0)


async def collect(stream: Any) -> list[str]:
    return [c.choices[0].delta.content async for c in stream
            if c.choices and c.choices[0].delta.content]


async def test_pipelines_are_models(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, FILES, config=config(upstream)) as d:
        c = client(d.base)
        ids = {m.id for m in (await c.models.list()).data}
        assert {"pipeline/greet", "pipeline/chatty", "pipeline/tool-only",
                "pipeline/broken"} <= ids
        assert "pipeline/private" not in ids
        assert (await c.models.retrieve("pipeline/greet")).id == "pipeline/greet"

        messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Ada"}]
        resp = await c.chat.completions.create(model="pipeline/greet", messages=messages)
        assert resp.choices[0].message.content == "Hello, Ada! (2 messages)"
        assert resp.model == "pipeline/greet"

        parts = await collect(await c.chat.completions.create(
            model="pipeline/greet", messages=messages, stream=True))
        assert parts == ["Hello, Ada! (2 messages)"], "no streaming step: one chunk"

        resp = await c.chat.completions.create(
            model="pipeline/tool-only", messages=[{"role": "user", "content": "abc"}])
        assert resp.choices[0].message.content == '{"upper": "ABC"}'


async def test_a_streaming_pipeline_streams(tmp_path: Path,
                                            upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, FILES, config=config(upstream)) as d:
        parts = await collect(await client(d.base).chat.completions.create(
            model="pipeline/chatty", messages=[{"role": "user", "content": "one two three"}],
            stream=True))
        assert "".join(parts) == "echo: one two three"
        assert len(parts) > 1, "chunks go out as the llm step streams them"


async def test_errors(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    async with run_daemon(tmp_path, FILES, config=config(upstream)) as d:
        c = client(d.base)
        with pytest.raises(openai.NotFoundError, match="opt in with gateway: true"):
            await c.chat.completions.create(
                model="pipeline/private", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError, match=r"pipeline run .* failed"):
            await c.chat.completions.create(
                model="pipeline/broken", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=d.base + "/v1", api_key="wrong",
                                     max_retries=0).chat.completions.create(
                model="pipeline/greet", messages=[{"role": "user", "content": "x"}])
