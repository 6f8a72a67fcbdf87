"""The ``llm`` step in real pipelines on a real daemon, against the scripted upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harkd.core.run import Run, RunResult
from harkd.testing import DaemonHandle, run_daemon
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def upstream_server() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def upstream(upstream_server: ScriptedUpstream) -> ScriptedUpstream:
    upstream_server.reset()
    return upstream_server


class Runs:
    """A run observer that keeps every finished run."""

    def __init__(self) -> None:
        self.done: list[tuple[Run, RunResult]] = []

    def run_started(self, run: Run) -> None:
        return None

    def run_finished(self, run: Run, result: RunResult) -> None:
        self.done.append((run, result))

    def detail(self, index: int = 0) -> dict[str, Any]:
        return self.done[-1][0].steps[index].detail


def config(up: ScriptedUpstream, extra: str = "") -> str:
    return f"""
models:
  fast:
    - {{model: openai/m1, api_base: "{up.v1}"}}
    - {{model: openai/m2, api_base: "{up.v1}", cloud: false}}
  cloudy:
    - {{model: openai/c1, api_base: "{up.v1}", cloud: true}}
    - {{model: openai/m2, api_base: "{up.v1}"}}
router: {{backoff: 1ms, retries: 0}}
{extra}
"""


def pipe(step: str, trigger: str = "http: {}", extra: str = "") -> str:
    return f"trigger: {{{trigger}}}\n{extra}steps:\n  - llm: {step}\n"


async def post(d: DaemonHandle, name: str, body: Any, **kw: Any) -> tuple[int, str]:
    async with d.http.post(d.url(f"/hooks/{name}"), json=body, **kw) as resp:
        return resp.status, await resp.text()


async def start(tmp_path: Path, up: ScriptedUpstream, files: dict[str, str],
                extra: str = "") -> Any:
    return run_daemon(tmp_path, files, config=config(up, extra))


async def test_prompt_system_and_run_log_detail(tmp_path: Path,
                                                upstream: ScriptedUpstream) -> None:
    files = {"ask": pipe('{model: fast, system: "Be brief.", prompt: "Q: {{ input.q }}", '
                         'temperature: 0.3, max_tokens: 20}')}
    async with await start(tmp_path, upstream, files) as d:
        runs = Runs()
        d.daemon.services.observers.append(runs)
        upstream.plan("m1", Reply(status=500))
        assert await post(d, "ask", {"q": "hello"}) == (200, "echo: Q: hello")
        body = upstream.last("m2").body
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert (body["temperature"], body["max_tokens"]) == (0.3, 20)
        detail = runs.detail()
        assert detail["alias"] == "fast" and detail["deployment"] == "openai/m2"
        assert detail["fallbacks"] == 1 and detail["attempts"][0]["status"] == 500
        assert detail["prompt_tokens"] == 7


async def test_input_is_the_default_prompt_and_failures_fail_the_run(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    files = {"plain": pipe("{model: fast}")}
    async with await start(tmp_path, upstream, files) as d:
        async with d.http.post(d.url("/hooks/plain"), data="just text",
                               headers={"Content-Type": "text/plain"}) as resp:
            assert await resp.text() == "echo: just text"
        upstream.plan("m1", Reply(status=500))
        upstream.plan("m2", Reply(status=500))
        status, text = await post(d, "plain", "x")
        assert status == 502 and "every deployment" in json.loads(text)["error"]["message"]
        assert await post(d, "plain", "again") == (200, "echo: again")


async def test_stream_over_sse(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    files = {"talk": pipe('{model: fast, prompt: "{{ input.q }}", stream: true}')}
    async with await start(tmp_path, upstream, files) as d:
        runs = Runs()
        d.daemon.services.observers.append(runs)
        async with d.http.post(d.url("/hooks/talk"), json={"q": "one two three"},
                               headers={"Accept": "text/event-stream"}) as resp:
            events = [json.loads(line[6:]) for line in (await resp.text()).splitlines()
                      if line.startswith("data: ")]
        deltas = [e["text"] for e in events if e["type"] == "delta"]
        assert len(deltas) > 1 and "".join(deltas) == "echo: one two three"
        assert events[-1]["type"] == "result" and events[-1]["output"] == "echo: one two three"
        assert runs.detail()["ttft_ms"] >= 0
        assert await post(d, "talk", {"q": "plain"}) == (200, "echo: plain")


async def test_json_schema_validated_with_one_retry(tmp_path: Path,
                                                    upstream: ScriptedUpstream) -> None:
    schema = '{type: object, required: [n], properties: {n: {type: integer}}}'
    files = {"js": pipe(f'{{model: fast, prompt: "count", json_schema: {schema}}}')}
    async with await start(tmp_path, upstream, files) as d:
        upstream.plan("m1", Reply(text="sure! n is three"), Reply(text='```json\n{"n": 3}\n```'))
        status, text = await post(d, "js", {})
        assert (status, json.loads(text)) == (200, {"n": 3})
        assert upstream.calls("m1") == 2
        assert "That is not valid" in upstream.last("m1").body["messages"][-1]["content"]
        assert upstream.last("m1").body["response_format"]["type"] == "json_schema"
        upstream.plan("m1", Reply(text='{"n": "x"}'), Reply(text='{"m": 1}'))
        status, text = await post(d, "js", {})
        assert status == 502 and "json_schema" in text


async def test_tool_loop_with_calculator_and_errors(tmp_path: Path,
                                                    upstream: ScriptedUpstream) -> None:
    files = {"calc": pipe('{model: fast, prompt: "{{ input }}", tools: [calculator, time]}')}
    async with await start(tmp_path, upstream, files) as d:
        runs = Runs()
        d.daemon.services.observers.append(runs)
        upstream.plan("m1", Reply(tool_calls=(("calculator", {"expression": "6*7"}),)))
        assert await post(d, "calc", "what is 6*7") == (200, "tool said: 42")
        first = upstream.requests[0].body
        assert {t["function"]["name"] for t in first["tools"]} == {"calculator", "time"}
        detail = runs.detail()
        assert detail["tool_rounds"] == 2 and detail["tool_calls"][0]["ok"] is True

        upstream.plan("m1", Reply(tool_calls=(("calculator", {"expression": "__import__('os')"}),
                                              ("nope", {}))))
        status, text = await post(d, "calc", "break it")
        assert status == 200 and text.startswith("tool said: ")
        tool_msgs = [m for m in upstream.last("m1").body["messages"] if m["role"] == "tool"]
        assert "not allowed" in tool_msgs[0]["content"]
        assert "unknown tool 'nope'" in tool_msgs[1]["content"]


async def test_tool_rounds_are_bounded(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    files = {"loop": pipe('{model: fast, tools: [time], max_tool_rounds: 2}')}
    async with await start(tmp_path, upstream, files) as d:
        upstream.default("m1", Reply(tool_calls=(("time", {}),)))
        status, _ = await post(d, "loop", "go")
        assert status == 200
        assert upstream.calls("m1") == 3  # two rounds, then one answer without tools
        assert "tools" not in upstream.last("m1").body


async def test_pipeline_as_tool(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    files = {
        "agent": pipe('{model: fast, tools: [{pipeline: shout, description: "Shout text"}]}'),
        "shout": "trigger: {http: {}}\nsteps:\n  - template: \"{{ input | upper }}!\"\n",
    }
    async with await start(tmp_path, upstream, files) as d:
        upstream.plan("m1", Reply(tool_calls=(("shout", {"input": "hey"}),)))
        assert await post(d, "agent", "go") == (200, "tool said: HEY!")


async def test_session_memory_survives_restart(tmp_path: Path,
                                               upstream: ScriptedUpstream) -> None:
    files = {"chat": pipe('{model: fast, system: "S", prompt: "{{ input.text }}", '
                          "session: \"{{ trigger.headers['X-User'] }}\"}")}
    async with await start(tmp_path, upstream, files) as d:
        await post(d, "chat", {"text": "my name is Ada"}, headers={"X-User": "ada"})
        await post(d, "chat", {"text": "I am Bob"}, headers={"X-User": "bob"})
    upstream.reset()
    async with await start(tmp_path, upstream, files) as d:
        await post(d, "chat", {"text": "who am I?"}, headers={"X-User": "ada"})
        messages = upstream.last("m1").body["messages"]
        assert messages == [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "echo: my name is Ada"},
            {"role": "user", "content": "who am I?"}]


async def test_allow_cloud_false_pipeline(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    files = {"private": pipe("{model: cloudy}", extra="allow_cloud: false\n"),
             "open": pipe("{model: cloudy}")}
    async with await start(tmp_path, upstream, files) as d:
        assert await post(d, "open", "x") == (200, "echo: x")
        assert upstream.calls("c1") == 1
        assert await post(d, "private", "x") == (200, "echo: x")
        assert upstream.calls("c1") == 1 and upstream.calls("m2") == 1


async def test_build_errors_name_the_problem(tmp_path: Path,
                                             upstream: ScriptedUpstream) -> None:
    files = {"bad": pipe("{model: fast, tools: [calculater]}"),
             "both": pipe('{prompt: "a", messages: [{role: user, content: b}]}'),
             "schema": pipe("{json_schema: {type: 12}}")}
    async with await start(tmp_path, upstream, files) as d:
        errors = {n: " ".join(str(e) for e in d.daemon.catalog.entries[n].errors)
                  for n in files}
        assert "did you mean 'calculator'" in errors["bad"]
        assert "not both" in errors["both"]
        assert "not a valid JSON Schema" in errors["schema"]
        assert all(d.state(n) == "rejected" for n in files)
