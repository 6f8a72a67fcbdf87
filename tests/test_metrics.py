"""``/metrics``: runs, durations, steps, loads, LLM calls, WebSocket connections, queues."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harkd.metrics import observe_llm_call
from harkd.testing import DaemonHandle, run_daemon, wait_until

pytestmark = pytest.mark.anyio

OK = "trigger: {http: {}}\nsteps:\n  - template: ok\n  - log: done\n"
WS = "trigger: {websocket: {}}\nsteps:\n  - template: hi\n"


async def _samples(d: DaemonHandle) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with d.http.get(d.url("/metrics")) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class _Attempt:
    alias: str = "smart"
    deployment: str = "openai/gpt-x"
    outcome: str = "ok"
    latency: float = 0.4
    ttft: float | None = 0.12
    prompt_tokens: int = 10
    completion_tokens: int = 5
    fallback: str | None = None


async def test_runs_steps_loads_and_llm_calls(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK}) as d:
        for _ in range(3):
            await (await d.http.post(d.url("/hooks/ok"))).release()
        await d.write("broken", "trigger: {http: {}}\nsteps: [{nope: 1}]\n")
        observe_llm_call(d.daemon.services, _Attempt())
        observe_llm_call(d.daemon.services, _Attempt(deployment="ollama/l", outcome="error",
                                                     ttft=None))
        observe_llm_call(d.daemon.services, _Attempt(fallback="timeout"))
        m = await _samples(d)
        assert m[("harkd_runs_total", (("pipeline", "ok"), ("status", "ok"),
                                       ("trigger", "http")))] == 3
        assert m[("harkd_run_duration_seconds_count", (("pipeline", "ok"),))] == 3
        assert m[("harkd_step_duration_seconds_count", (("kind", "log"),
                                                        ("pipeline", "ok")))] == 3
        assert m[("harkd_pipeline_loads_total", (("result", "loaded"),))] == 1
        assert m[("harkd_pipeline_loads_total", (("result", "rejected"),))] == 1
        assert m[("harkd_pipelines", (("state", "rejected"),))] == 1
        assert m[("harkd_llm_calls_total", (("alias", "smart"), ("deployment", "openai/gpt-x"),
                                            ("outcome", "ok")))] == 2
        assert m[("harkd_llm_calls_total", (("alias", "smart"), ("deployment", "ollama/l"),
                                            ("outcome", "error")))] == 1
        assert m[("harkd_llm_time_to_first_token_seconds_count",
                  (("deployment", "openai/gpt-x"),))] == 2
        assert m[("harkd_llm_fallbacks_total", (("alias", "smart"), ("reason", "timeout")))] == 1
        assert m[("harkd_llm_tokens_total", (("deployment", "openai/gpt-x"),
                                             ("kind", "prompt")))] == 20


async def test_live_gauges_websockets_and_queue_depth(tmp_path: Path) -> None:
    slow = ("trigger: {http: {}}\nconcurrency: {max: 1, mode: queue}\n"
            "steps:\n  - http: {url: '{{ input.url }}'}\n")
    from aiohttp import web

    from harkd.testing import serve_app

    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    # a scripted upstream that holds requests, so runs wait in the queue
    async with serve_app({"/hold": hold}) as upstream, run_daemon(
            tmp_path, {"ws": WS, "slow": slow}) as d:
        a = await d.http.ws_connect(d.ws_url("/ws/ws"))
        b = await d.http.ws_connect(d.ws_url("/ws/ws"))
        posts = [asyncio.create_task(d.http.post(d.url("/hooks/slow"),
                                                 json={"url": upstream + "/hold"}))
                 for _ in range(3)]
        gate = d.daemon.catalog.entries["slow"].gate
        assert gate is not None
        await wait_until(lambda: gate.depth == 2)
        m = await _samples(d)
        assert m[("harkd_websocket_connections", (("pipeline", "ws"),))] == 2
        assert m[("harkd_queue_depth", (("pipeline", "slow"),))] == 2
        assert m[("harkd_runs_in_flight", (("pipeline", "slow"),))] == 3
        release.set()
        for p in posts:
            (await p).release()
        await a.close()
        await b.close()
        await wait_until(lambda: gate.depth == 0)
        m = await _samples(d)
        assert ("harkd_websocket_connections", (("pipeline", "ws"),)) not in m
        assert m[("harkd_queue_depth", (("pipeline", "slow"),))] == 0


async def test_two_daemons_keep_their_own_metrics(tmp_path: Path) -> None:
    async with run_daemon(tmp_path / "a", {"ok": OK}) as a, run_daemon(tmp_path / "b",
                                                                         {"ok": OK}) as b:
        await (await a.http.post(a.url("/hooks/ok"))).release()
        key = ("harkd_runs_total", (("pipeline", "ok"), ("status", "ok"), ("trigger", "http")))
        assert (await _samples(a))[key] == 1
        assert key not in await _samples(b)


async def test_router_attempts_reach_metrics(tmp_path: Path) -> None:
    """A real llm step through the router against the scripted (fault-injecting) upstream:
    the failed first deployment and the fallback show up as metrics."""
    from harkd.testing_upstream import Reply, ScriptedUpstream

    async with ScriptedUpstream() as up:
        up.plan("broken", *[Reply(status=500)] * 10)
        config = (
            "models:\n  smart:\n"
            f"    - {{model: openai/broken, api_base: '{up.v1}', api_key: k}}\n"
            f"    - {{model: openai/good, api_base: '{up.v1}', api_key: k}}\n"
            "router: {retries: 0}\n"
        )
        llm = "trigger: {http: {}}\nsteps:\n  - llm: {model: smart, prompt: '{{ input }}'}\n"
        async with run_daemon(tmp_path, {"ask": llm}, config=config) as d:
            async with d.http.post(d.url("/hooks/ask"), data="hi",
                                   headers={"Content-Type": "text/plain"}) as r:
                assert (r.status, await r.text()) == (200, "echo: hi")
            m = await _samples(d)
    calls = {labels: v for (name, labels), v in m.items()
             if name == "harkd_llm_calls_total"}
    outcomes = {dict(labels)["deployment"]: dict(labels)["outcome"] for labels in calls}
    assert outcomes == {"openai/broken": "error", "openai/good": "ok"}, calls
    assert any(name == "harkd_llm_fallbacks_total" and v >= 1 for (name, _), v in m.items())
