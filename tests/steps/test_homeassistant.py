"""The Home Assistant tools in llm steps, against a scripted Home Assistant REST server
(the endpoints the tools use, with a token check and a hang for timeouts) and the
scripted OpenAI upstream, which asks for the tool calls and echoes their results."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import DaemonHandle, run_daemon
from harkd.testing_homeassistant import ScriptedHomeAssistant
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio

TOKEN = "ha-secret-token-123"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def ha() -> AsyncIterator[tuple[ScriptedHomeAssistant, str]]:
    fake = ScriptedHomeAssistant(token=TOKEN)
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as up:
        yield up


def config(up: ScriptedUpstream, url: str, token: str = TOKEN, timeout: str = "5s") -> str:
    return f"""
models:
  fast:
    - {{model: openai/m1, api_base: "{up.v1}"}}
router: {{backoff: 1ms, retries: 0}}
homeassistant:
  url: {url}
  token: {token}
  domains: [light, sensor]
  timeout: {timeout}
"""


PIPELINE = """\
trigger: {http: {}}
steps:
  - llm: {model: fast, tools: [ha_entities, ha_state, ha_call_service]}
"""


async def ask(d: DaemonHandle, text: str) -> str:
    async with d.http.post(d.url("/hooks/home"), data=text,
                           headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


def tool_result(answer: str) -> Any:
    """What the tool answered (a failing tool answers ``{"error": message}``)."""
    assert answer.startswith("tool said: "), answer
    value = json.loads(answer.removeprefix("tool said: "))
    return value["error"] if isinstance(value, dict) and set(value) == {"error"} else value


async def test_list_get_and_call_within_the_allowed_domains(
        tmp_path: Path, ha: tuple[ScriptedHomeAssistant, str],
        upstream: ScriptedUpstream) -> None:
    fake, url = ha
    async with run_daemon(tmp_path, {"home": PIPELINE}, config=config(upstream, url)) as d:
        upstream.plan("m1", Reply(tool_calls=(("ha_entities", {}),)))
        listed = tool_result(await ask(d, "what can you control?"))
        assert {e["entity_id"] for e in listed} == {"light.kitchen", "sensor.outside"}
        tools = {t["function"]["name"] for t in upstream.requests[0].body["tools"]}
        assert tools == {"ha_entities", "ha_state", "ha_call_service"}

        upstream.plan("m1", Reply(tool_calls=(("ha_state", {"entity_id": "sensor.outside"}),)))
        state = tool_result(await ask(d, "how cold is it?"))
        assert state["state"] == "12.5" and state["unit_of_measurement"] == "°C"

        upstream.plan("m1", Reply(tool_calls=(("ha_call_service", {
            "domain": "light", "service": "turn_on", "entity_id": "light.kitchen",
            "data": {"brightness_pct": 60}}),)))
        done = tool_result(await ask(d, "turn on the kitchen lights"))
        assert done["changed"][0]["state"] == "on"
        assert fake.calls == [("light", "turn_on", {"brightness_pct": 60,
                                                    "entity_id": "light.kitchen"})]

        before = fake.requests
        upstream.plan("m1", Reply(tool_calls=(("ha_call_service", {
            "domain": "lock", "service": "unlock", "entity_id": "lock.front_door"}),)))
        refused = tool_result(await ask(d, "open the front door"))
        assert "domain 'lock' is not allowed" in refused
        upstream.plan("m1", Reply(tool_calls=(("ha_call_service", {
            "domain": "light", "service": "turn_on", "entity_id": "lock.front_door"}),)))
        refused = tool_result(await ask(d, "sneaky"))
        assert "not allowed" in refused
        assert fake.requests == before  # nothing outside the allow-list reached HA
        assert fake.states["lock.front_door"]["state"] == "locked"


async def test_a_refused_token_and_a_hang_become_tool_errors(
        tmp_path: Path, ha: tuple[ScriptedHomeAssistant, str],
        upstream: ScriptedUpstream) -> None:
    fake, url = ha
    async with run_daemon(tmp_path / "bad", {"home": PIPELINE},
                          config=config(upstream, url, token="wrong")) as d:
        upstream.plan("m1", Reply(tool_calls=(("ha_entities", {}),)))
        assert "refused the token (401)" in tool_result(await ask(d, "list"))
    fake.hang = True
    async with run_daemon(tmp_path / "slow", {"home": PIPELINE},
                          config=config(upstream, url, timeout="300ms")) as d:
        upstream.plan("m1", Reply(tool_calls=(("ha_state", {"entity_id": "light.kitchen"}),)))
        assert "did not answer within 0.3s" in tool_result(await ask(d, "state?"))
        async with d.http.get(d.url("/api/runs?pipeline=home")) as resp:
            run_id = (await resp.json())["runs"][0]["id"]
        async with d.http.get(d.url(f"/api/runs/{run_id}")) as resp:
            text = await resp.text()
        assert TOKEN not in text


async def test_unconfigured_home_assistant_says_so(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    cfg = f'models: {{fast: [{{model: openai/m1, api_base: "{upstream.v1}"}}]}}\n'
    async with run_daemon(tmp_path, {"home": PIPELINE}, config=cfg) as d:
        upstream.plan("m1", Reply(tool_calls=(("ha_entities", {}),)))
        assert "homeassistant.url" in tool_result(await ask(d, "list"))
