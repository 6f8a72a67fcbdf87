"""Real ``litellm`` through the router, against scripted Anthropic and Gemini upstreams.

Every test runs for both dialects: a plain answer, a stream, tool calls (and the whole
tool loop), a 429 with Retry-After (retried, then fallback), a 500 (fallback), a 401 (no
retry, the deployment named, the key redacted) and a hang (timeout).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from router_helpers import FAST, ask

from harkd.router import ChatRequest, Router
from harkd.router.errors import NoDeployment
from harkd.settings import Settings
from harkd.testing_cloud import Reply, ScriptedAnthropic, ScriptedGemini
from harkd.testing_upstream import ScriptedUpstream
from harkd.tools import ToolContext, available
from harkd.tools.loop import run_loop

pytestmark = pytest.mark.anyio

KEY = "sk-test-4f9c2e7d1a0b8c6e"
CALC = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate arithmetic.",
    "parameters": {"type": "object", "required": ["expression"],
                   "properties": {"expression": {"type": "string"}}}}}


@pytest.fixture(scope="module")
async def anthropic() -> AsyncIterator[ScriptedAnthropic]:
    async with ScriptedAnthropic() as up:
        yield up


@pytest.fixture(scope="module")
async def gemini() -> AsyncIterator[ScriptedGemini]:
    async with ScriptedGemini() as up:
        yield up


class Cloud:
    """One dialect under test: its upstream, and deployments that point at it."""

    def __init__(self, up: ScriptedUpstream, provider: str, model: str) -> None:
        self.up, self.provider, self.model = up, provider, model
        self.label = f"{provider}/{model}"

    def entry(self, **extra: Any) -> dict[str, Any]:
        return {"model": self.label, "api_base": self.up.base, "api_key": KEY, **extra}


@pytest.fixture(params=["anthropic", "gemini"])
async def cloud(request: pytest.FixtureRequest, anthropic: ScriptedAnthropic,
                gemini: ScriptedGemini) -> AsyncIterator[Cloud]:
    c = Cloud(anthropic, "anthropic", "claude-3-5-haiku-20241022") if request.param == "anthropic" \
        else Cloud(gemini, "gemini", "gemini-2.5-flash")
    c.up.reset()
    yield c
    c.up.reset()


@pytest.fixture
async def router() -> AsyncIterator[Callable[..., Router]]:
    made: list[Router] = []

    def make(models: dict[str, list[Any]], **policy: Any) -> Router:
        r = Router.from_settings(Settings(models=models, router={**FAST, **policy}))
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


def _key_sent(c: Cloud) -> bool:
    seen = c.up.last(c.model)
    return KEY in (seen.headers.get("x-api-key"), seen.headers.get("x-goog-api-key"),
                   seen.query.get("key"))


async def test_plain_answer(cloud: Cloud, router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]})
    resp = await r.complete(ask("hello there", temperature=0.2, max_tokens=50))
    assert resp.text == "echo: hello there"
    assert resp.deployment == cloud.label
    assert resp.usage.prompt_tokens == 7 and not resp.usage.estimated
    assert cloud.up.calls(cloud.model) == 1 and _key_sent(cloud)


async def test_system_prompt_reaches_the_provider(cloud: Cloud,
                                                  router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]})
    await r.complete(ChatRequest(model="a", messages=(
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"})))
    body = cloud.up.last(cloud.model).body
    system = body.get("system") or body.get("systemInstruction") or body.get(
        "system_instruction")
    assert "Be brief." in json.dumps(system)


async def test_streaming(cloud: Cloud, router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]})
    stream = r.stream(ask("one two three four"))
    chunks = [c async for c in stream]
    assert "".join(chunks) == "echo: one two three four"
    assert len(chunks) > 1, "a stream must arrive in pieces"
    assert stream.response is not None and stream.response.deployment == cloud.label
    assert stream.response.ttft is not None


async def test_tool_call_and_the_tool_loop(cloud: Cloud,
                                           router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]})
    cloud.up.plan(cloud.model, Reply(tool_calls=(("calculator", {"expression": "6*7"}),)))
    resp = await r.complete(ask("what is 6*7?", tools=(CALC,)))
    assert [(c.name, json.loads(c.arguments)) for c in resp.tool_calls] == [
        ("calculator", {"expression": "6*7"})]
    sent = json.dumps(cloud.up.last(cloud.model).body)
    assert "calculator" in sent and "expression" in sent

    cloud.up.plan(cloud.model, Reply(tool_calls=(("calculator", {"expression": "6*7"}),)))
    result = await run_loop(r, ask("what is 6*7?"), {"calculator": available()["calculator"]},
                            ToolContext())
    assert result.response.text == "tool said: 42"
    assert [c.ok for c in result.calls] == [True] and result.rounds == 2


async def test_streamed_tool_call(cloud: Cloud, router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]})
    cloud.up.plan(cloud.model, Reply(tool_calls=(("calculator", {"expression": "1+1"}),)))
    stream = r.stream(ask("1+1?", tools=(CALC,)))
    response = await stream.collect()
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("calculator", {"expression": "1+1"})]


async def test_429_with_retry_after_is_retried_then_falls_back(
        cloud: Cloud, router: Callable[..., Router], anthropic: ScriptedAnthropic) -> None:
    backup = Cloud(anthropic, "anthropic", "claude-backup")
    r = router({"a": [cloud.entry(), backup.entry()]}, retries=1)
    cloud.up.plan(cloud.model, Reply(status=429, retry_after="0"),
                  Reply(status=429, retry_after="0"))
    resp = await r.complete(ask())
    assert cloud.up.calls(cloud.model) == 2, "retried once (retries: 1), no more"
    assert resp.deployment == backup.label
    assert [a.outcome for a in resp.attempts] == ["rate_limited", "rate_limited", "ok"]
    assert resp.attempts[0].status == 429 and resp.attempts[-1].fallback == "rate_limited"


async def test_long_retry_after_moves_on_at_once(
        cloud: Cloud, router: Callable[..., Router], anthropic: ScriptedAnthropic) -> None:
    backup = Cloud(anthropic, "anthropic", "claude-backup")
    r = router({"a": [cloud.entry(), backup.entry()]}, retries=3)
    cloud.up.plan(cloud.model, Reply(status=429, retry_after="120"))
    resp = await r.complete(ask())
    assert cloud.up.calls(cloud.model) == 1, "Retry-After over max_retry_after: no retry"
    assert resp.deployment == backup.label
    resp = await r.complete(ask())
    assert cloud.up.calls(cloud.model) == 1, "held out for the Retry-After"
    assert resp.attempts[0].outcome == "skipped"


async def test_500_falls_back(cloud: Cloud, router: Callable[..., Router],
                              anthropic: ScriptedAnthropic) -> None:
    backup = Cloud(anthropic, "anthropic", "claude-backup")
    r = router({"a": [cloud.entry(), backup.entry()]}, retries=1)
    cloud.up.plan(cloud.model, Reply(status=500), Reply(status=500))
    resp = await r.complete(ask())
    assert resp.deployment == backup.label and resp.text == "echo: hi"
    assert cloud.up.calls(cloud.model) == 2
    assert [a.status for a in resp.attempts[:2]] == [500, 500]


async def test_401_is_not_retried_and_names_the_deployment_without_the_key(
        cloud: Cloud, router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry()]}, retries=3)
    cloud.up.plan(cloud.model, Reply(status=401, text=f"invalid api key: {KEY}"))
    with pytest.raises(NoDeployment) as info:
        await r.complete(ask())
    message = str(info.value)
    assert cloud.up.calls(cloud.model) == 1
    assert cloud.label in message
    assert KEY not in message
    assert KEY not in json.dumps([a.error for a in info.value.attempts])
    assert f"{cloud.label} answered 401: the API key was rejected" in message
    assert "invalid api key: " in message, "the upstream's words (with the key masked)"


async def test_hang_times_out(cloud: Cloud, router: Callable[..., Router]) -> None:
    r = router({"a": [cloud.entry(timeout=0.5)]})
    cloud.up.plan(cloud.model, Reply(hang=True))
    with pytest.raises(NoDeployment) as info:
        await r.complete(ask())
    assert info.value.status == 504 and cloud.label in str(info.value)


async def test_stream_hang_times_out_then_falls_back(
        cloud: Cloud, router: Callable[..., Router], anthropic: ScriptedAnthropic) -> None:
    backup = Cloud(anthropic, "anthropic", "claude-backup")
    r = router({"a": [cloud.entry(first_token_timeout=0.5), backup.entry()]})
    cloud.up.plan(cloud.model, Reply(first_token_delay=30))
    stream = r.stream(ask("late"))
    assert "".join([c async for c in stream]) == "echo: late"
    assert stream.response is not None and stream.response.deployment == backup.label
    assert stream.response.attempts[0].outcome == "timeout"


@pytest.mark.parametrize("version", ["1.82.7", "1.82.8"])
def test_compromised_releases_are_refused_before_import(version: str) -> None:
    from harkd.router.litellm_backend import refuse_compromised

    with pytest.raises(ImportError, match="compromised"):
        refuse_compromised(version)
    refuse_compromised("1.82.6")
    refuse_compromised(importlib.metadata.version("litellm"))  # the tested one passes
