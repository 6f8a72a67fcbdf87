"""Routing against the scripted upstream: fallback, retries, cooldown, limits, streaming."""

from __future__ import annotations

import asyncio
import random

import pytest
from router_helpers import MakeRouter, ask

from harkd.router import (
    Attempt,
    BackendFailed,
    CloudForbidden,
    NoDeployment,
    UnknownAlias,
)
from harkd.testing import capture_logs
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio


async def test_answers_and_reports_usage(make_router: MakeRouter,
                                         upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1"]})
    resp = await r.complete(ask("hello", temperature=0.2, max_tokens=5, stop=("User:",)))
    assert resp.text == "echo: hello"
    assert (resp.alias, resp.deployment, resp.fallbacks) == ("a", "openai/m1", 0)
    assert resp.usage.prompt_tokens == 7 and not resp.usage.estimated
    body = upstream.last("m1").body
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.2, 5, ["User:"])


async def test_fallback_after_retries_on_500(make_router: MakeRouter,
                                             upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, retries=1)
    upstream.plan("m1", Reply(status=500), Reply(status=503))
    resp = await r.complete(ask())
    assert resp.deployment == "openai/m2"
    assert upstream.calls("m1") == 2 and upstream.calls("m2") == 1
    assert [a.outcome for a in resp.attempts] == ["error", "error", "ok"]
    assert resp.attempts[-1].fallback == "error"
    assert resp.fallbacks == 1


async def test_retry_recovers_on_same_deployment(make_router: MakeRouter,
                                                 upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]})
    upstream.plan("m1", Reply(status=429, retry_after="0"))
    resp = await r.complete(ask())
    assert resp.deployment == "openai/m1"
    assert upstream.calls("m1") == 2 and upstream.calls("m2") == 0
    assert resp.attempts[0].outcome == "rate_limited"


async def test_long_retry_after_moves_on_and_holds_deployment(
        make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, max_retry_after=5)
    upstream.plan("m1", Reply(status=429, retry_after="120"))
    assert (await r.complete(ask())).deployment == "openai/m2"
    assert upstream.calls("m1") == 1
    assert (await r.complete(ask())).deployment == "openai/m2"
    assert upstream.calls("m1") == 1  # held out for Retry-After, not asked again


async def test_client_error_is_not_retried(make_router: MakeRouter,
                                           upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, failures=1)
    upstream.plan("m1", Reply(status=400))
    assert (await r.complete(ask())).deployment == "openai/m2"
    assert upstream.calls("m1") == 1
    # a request's own error does not open the breaker
    assert (await r.complete(ask())).deployment == "openai/m1"


async def test_cooldown_skips_then_half_open_probe(make_router: MakeRouter,
                                                   upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, retries=0, failures=2, cooldown=0.3)
    upstream.plan("m1", Reply(status=500), Reply(status=500))
    await r.complete(ask())
    await r.complete(ask())
    assert upstream.calls("m1") == 2
    assert r.status()["a"][0]["breaker"] == "open"
    resp = await r.complete(ask())
    assert upstream.calls("m1") == 2, "a cooling deployment must not be called"
    assert resp.attempts[0].outcome == "skipped" and resp.attempts[1].fallback == "cooldown"
    await asyncio.sleep(0.35)
    upstream.plan("m1", Reply(status=500))  # the probe fails: open again
    assert (await r.complete(ask())).deployment == "openai/m2"
    assert upstream.calls("m1") == 3
    await r.complete(ask())
    assert upstream.calls("m1") == 3
    await asyncio.sleep(0.35)
    assert (await r.complete(ask())).deployment == "openai/m1"  # probe succeeds
    assert r.status()["a"][0]["breaker"] == "closed"


async def test_half_open_lets_one_probe_through(make_router: MakeRouter,
                                                upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, retries=0, failures=1, cooldown=0.2)
    upstream.plan("m1", Reply(status=500))
    await r.complete(ask())
    await asyncio.sleep(0.25)
    upstream.plan("m1", Reply(delay=0.2))
    results = await asyncio.gather(*(r.complete(ask()) for _ in range(4)))
    assert [x.deployment for x in results].count("openai/m1") == 1
    assert upstream.calls("m1") == 2


async def test_timeout_falls_back(make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "timeout": 0.2}, "m2"]})
    upstream.plan("m1", Reply(hang=True))
    resp = await r.complete(ask())
    assert resp.deployment == "openai/m2"
    assert resp.attempts[0].outcome == "timeout"
    assert upstream.calls("m1") == 1  # a timeout is not retried on the same deployment


async def test_a_cancelled_call_is_cancelled_not_timed_out(
        make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    # the attempt's timeout is a timer that cancels the task: a cancellation from outside
    # must stay one (no fallback to m2, no timeout recorded), also under a cancel scope
    r = make_router({"a": [{"model": "openai/m1", "timeout": 30}, "m2"]})
    seen: list[Attempt] = []
    r.observers.append(seen.append)
    upstream.plan("m1", Reply(hang=True), Reply(hang=True))
    task = asyncio.create_task(r.complete(ask()))
    while upstream.calls("m1") < 1:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # an outer timeout is the caller's, not m1's
            await r.complete(ask())
    assert upstream.calls("m2") == 0 and seen == []
    assert r.attempts.inflight == 0


async def test_every_deployment_failing_raises_with_reasons(
        make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", {"model": "openai/m2", "timeout": 0.1}]}, retries=0)
    upstream.plan("m1", Reply(status=500))
    upstream.plan("m2", Reply(hang=True))
    with pytest.raises(NoDeployment) as info:
        await r.complete(ask())
    assert "openai/m1" in str(info.value) and "openai/m2" in str(info.value)
    assert info.value.status == 502


async def test_weights_share_a_tier(make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    random.seed(7)
    r = make_router({"a": [{"model": "openai/m1", "weight": 1},
                           {"model": "openai/m2", "weight": 1},
                           "m3"]})
    for _ in range(40):
        await r.complete(ask())
    assert upstream.calls("m1") > 5 and upstream.calls("m2") > 5
    assert upstream.calls("m3") == 0
    upstream.reset()
    r2 = make_router({"a": [{"model": "openai/m1", "weight": 1},
                            {"model": "openai/m2", "weight": 50}]})
    for _ in range(40):
        await r2.complete(ask())
    assert upstream.calls("m2") > upstream.calls("m1") * 4


async def test_max_concurrent_queues(make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "max_concurrent": 1}]})
    upstream.default("m1", Reply(delay=0.05))
    results = await asyncio.gather(*(r.complete(ask()) for _ in range(4)))
    assert all(x.deployment == "openai/m1" for x in results)
    assert upstream.max_inflight["m1"] == 1
    assert upstream.calls("m1") == 4


async def test_bounded_queue_wait_then_fallback_or_429(make_router: MakeRouter,
                                                       upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "max_concurrent": 1}, "m2"],
                     "b": [{"model": "openai/m3", "max_concurrent": 1}]},
                    queue_timeout=0.05)
    upstream.plan("m1", Reply(delay=0.5))
    upstream.plan("m3", Reply(delay=0.5))
    first = asyncio.ensure_future(r.complete(ask()))
    slow = asyncio.ensure_future(r.complete(ask(model="b")))
    await asyncio.sleep(0.01)
    second = await r.complete(ask())
    assert second.deployment == "openai/m2"
    assert second.attempts[-1].fallback == "queue_timeout"
    with pytest.raises(NoDeployment) as info:
        await r.complete(ask(model="b"))
    assert info.value.status == 429 and info.value.retry_after is not None
    assert (await first).deployment == "openai/m1"
    await slow


async def test_rpm_limit(make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "rpm": 2}, "m2"]}, queue_timeout=0.01)
    got = [(await r.complete(ask())).deployment for _ in range(3)]
    assert got == ["openai/m1", "openai/m1", "openai/m2"]


async def test_tpm_limit_counts_real_usage(make_router: MakeRouter,
                                           upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "tpm": 12}, "m2"]}, queue_timeout=0.01)
    first = await r.complete(ask(max_tokens=1))
    second = await r.complete(ask(max_tokens=1))
    assert (first.deployment, second.deployment) == ("openai/m1", "openai/m2")


async def test_stream_falls_back_before_first_token(make_router: MakeRouter,
                                                    upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "first_token_timeout": 0.2}, "m2"]})
    upstream.plan("m1", Reply(first_token_delay=5))
    stream = r.stream(ask("there"))
    chunks = [c async for c in stream]
    assert "".join(chunks) == "echo: there"
    assert stream.response is not None
    assert stream.response.deployment == "openai/m2"
    assert stream.response.attempts[0].outcome == "timeout"
    assert stream.response.ttft is not None
    upstream.plan("m1", Reply(status=500), Reply(status=500), Reply(status=500))
    stream = r.stream(ask("again"))
    assert "".join([c async for c in stream]) == "echo: again"
    assert stream.response is not None and stream.response.deployment == "openai/m2"


async def test_stream_failing_after_first_token_is_not_replayed(
        make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]})
    upstream.plan("m1", Reply(text="one two three four", break_after=2))
    seen = []
    with pytest.raises(BackendFailed):
        async for chunk in r.stream(ask()):
            seen.append(chunk)
    assert seen == ["one ", "two "]
    assert upstream.calls("m2") == 0


async def test_stream_timeout_covers_the_whole_stream(
        make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    # after the first token the deadline is the call's timeout, also for an upstream that
    # stops sending (the outer 10 s bound only keeps a broken deadline from hanging here)
    r = make_router({"a": [{"model": "openai/m1", "timeout": 0.5}, "m2"]})
    seen: list[Attempt] = []
    r.observers.append(seen.append)
    upstream.plan("m1", Reply(text="a b c", chunk_delay=30))
    got: list[str] = []
    async with asyncio.timeout(10):
        with pytest.raises(BackendFailed, match=r"did not finish its stream within 0\.5s"):
            async for chunk in r.stream(ask()):
                got.append(chunk)
    assert got == ["a "] and seen[-1].outcome == "timeout" and upstream.calls("m2") == 0


async def test_stream_collects_tool_calls(make_router: MakeRouter,
                                          upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1"]})
    upstream.plan("m1", Reply(tool_calls=(("calculator", {"expression": "2+2"}),)))
    resp = await r.stream(ask()).collect()
    assert [(c.name, c.arguments) for c in resp.tool_calls] == \
        [("calculator", '{"expression": "2+2"}')]


async def test_ollama_native_api(make_router: MakeRouter, upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["ollama/llama3.2"]})
    resp = await r.complete(ask("yo", temperature=0.1, max_tokens=3))
    assert resp.text == "echo: yo" and resp.deployment == "ollama/llama3.2"
    seen = upstream.last("llama3.2")
    assert seen.path == "ollama"
    assert seen.body["options"] == {"temperature": 0.1, "num_predict": 3}
    stream = r.stream(ask("streamed"))
    assert "".join([c async for c in stream]) == "echo: streamed"
    assert stream.response is not None and stream.response.usage.prompt_tokens == 7


async def test_allow_cloud_false_uses_only_local(make_router: MakeRouter,
                                                 upstream: ScriptedUpstream) -> None:
    r = make_router({"a": [{"model": "openai/m1", "cloud": True}, "m2"],
                     "c": [{"model": "openai/m1", "cloud": True}]})
    assert (await r.complete(ask())).deployment == "openai/m1"
    assert (await r.complete(ask(allow_cloud=False))).deployment == "openai/m2"
    assert upstream.calls("m1") == 1
    with pytest.raises(CloudForbidden):
        await r.complete(ask(model="c", allow_cloud=False))


async def test_unknown_alias_suggests(make_router: MakeRouter) -> None:
    r = make_router({"smart": ["m1"]})
    with pytest.raises(UnknownAlias, match="did you mean 'smart'"):
        await r.complete(ask(model="smrt"))
    assert r.aliases() == ["default", "smart"]


async def test_missing_api_key_is_named_and_falls_back(
        make_router: MakeRouter, upstream: ScriptedUpstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    r = make_router({"a": [{"model": "openai/gpt-4o-mini",
                            "api_base": "https://api.openai.com/v1"}, "m2"]})
    resp = await r.complete(ask())
    assert resp.deployment == "openai/m2"
    assert "OPENAI_API_KEY" in (resp.attempts[0].error or "")


async def test_api_key_is_sent_but_never_logged(make_router: MakeRouter,
                                                upstream: ScriptedUpstream) -> None:
    secret = "sk-test-very-secret-value-0123456789"
    r = make_router({"a": [{"model": "openai/m1", "api_key": secret}, "m2"]})
    upstream.plan("m1", Reply(status=401))
    with capture_logs() as logs:
        resp = await r.complete(ask())
    assert upstream.last("m1").headers["Authorization"] == f"Bearer {secret}"
    assert resp.deployment == "openai/m2"
    assert secret not in repr(logs) and secret not in repr(resp)
    assert "rejected" in (resp.attempts[0].error or "")


async def test_observers_see_every_attempt(make_router: MakeRouter,
                                           upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1", "m2"]}, retries=0)
    seen: list[Attempt] = []
    r.observers.append(seen.append)
    upstream.plan("m1", Reply(status=500))
    await r.stream(ask()).collect()
    assert [(a.deployment, a.outcome, a.stream) for a in seen] == [
        ("openai/m1", "error", True), ("openai/m2", "ok", True)]
    assert seen[1].ttft is not None and seen[1].fallback == "error"
    assert seen[1].completion_tokens == 2


async def test_aclose_waits_for_calls_in_flight(make_router: MakeRouter,
                                                upstream: ScriptedUpstream) -> None:
    r = make_router({"a": ["m1"]})
    upstream.plan("m1", Reply(delay=0.2))
    call = asyncio.ensure_future(r.complete(ask()))
    await asyncio.sleep(0.05)
    await r.aclose(grace=5)
    assert call.done() and call.result().text == "echo: hi"
