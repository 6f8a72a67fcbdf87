"""map, parallel and switch, and the retry and on_error meta keys, in a real daemon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harkd.check import check
from harkd.testing import run_daemon, serve_app
from streamstep import chunks_step  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


async def post(d: Any, name: str, body: object) -> tuple[int, Any, str]:
    async with d.http.post(d.url(f"/hooks/{name}"), json=body) as r:
        data = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, data, r.headers.get("X-Harkd-Run-Id", "")


async def run_record(d: Any, run_id: str) -> dict[str, Any]:
    for _ in range(100):  # the run log writes in its own thread
        async with d.http.get(d.url(f"/api/runs/{run_id}")) as r:
            if r.status == 200:
                body: dict[str, Any] = await r.json()
                if body["status"] != "running":
                    return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached the run log")


MAP = """
trigger: {http: {}}
steps:
  - set: {suffix: "'!'"}
  - map:
      over: "{{ input.items }}"
      concurrency: 2
      steps:
        - template: "{{ input | upper }}"
          as: up
        - template: "{{ vars.up }}{{ vars.suffix }}"
    as: shouted
  - template: "{{ {'out': input, 'leaked': vars.up | default('no')} }}"
"""


async def test_map_keeps_order_records_paths_and_scopes_vars(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"m": MAP}) as d:
        status, body, run_id = await post(d, "m", {"items": ["a", "b", "c"]})
        assert status == 200, body
        assert body == {"out": ["A!", "B!", "C!"], "leaked": "no"}
        record = await run_record(d, run_id)
    paths = [s["path"] for s in record["steps"]]
    assert paths[:2] == ["0", "1"] and paths[-1] == "2"
    nested = sorted(p for p in paths if p.startswith("1.map["))
    assert nested == ["1.map[0].0", "1.map[0].1", "1.map[1].0", "1.map[1].1",
                      "1.map[2].0", "1.map[2].1"]
    assert all(isinstance(s["duration_ms"], float) for s in record["steps"])
    assert record["steps"][1]["detail"]["items"] == 3


async def test_map_over_something_that_is_not_a_list_is_a_clear_run_error(
        tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"m": MAP}) as d:
        status, body, _ = await post(d, "m", {"items": "abc"})
        assert status == 422
        assert "map: `over` (/steps/1/map/over) must give a list, not a string" \
            in body["error"]["message"]
        # the daemon keeps serving
        status, body, _ = await post(d, "m", {"items": []})
        assert status == 200 and body == {"out": [], "leaked": "no"}


async def test_map_runs_at_most_concurrency_items_at_once(tmp_path: Path) -> None:
    active = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.json_response({"n": int(request.query["n"])})

    async with serve_app({"/n": slow}) as base:
        flow = f"""
trigger: {{http: {{}}}}
steps:
  - map:
      over: "{{{{ range(10) | list }}}}"
      concurrency: 3
      steps:
        - http: {{url: "{base}/n?n={{{{ input }}}}", method: GET}}
        - template: "{{{{ input.n * 10 }}}}"
"""
        async with run_daemon(tmp_path, {"m": flow}) as d:
            status, body, _ = await post(d, "m", {})
    assert status == 200, body
    assert body == [n * 10 for n in range(10)]
    assert peak == 3


PARALLEL = """
trigger: {http: {}}
steps:
  - parallel:
      short: [{template: "{{ input.text[:3] }}"}]
      loud:
        - template: "{{ input.text | upper }}"
          as: mine
      tolerant:
        steps:
          - template: "{{ input.missing.deeper }}"
        on_error:
          - template: "recovered from {{ input.step }}: {{ 'missing' in input.error }}"
  - template: "{{ {'branches': input, 'leaked': vars.mine | default('no')} }}"
"""


async def test_parallel_gives_a_mapping_and_a_branch_may_recover(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"p": PARALLEL}) as d:
        status, body, run_id = await post(d, "p", {"text": "hello"})
        assert status == 200, body
        assert body == {"branches": {"short": "hel", "loud": "HELLO",
                                     "tolerant": "recovered from parallel: True"},
                        "leaked": "no"}
        record = await run_record(d, run_id)
    by_path = {s["path"]: s for s in record["steps"]}
    assert by_path["0.parallel.tolerant.0"]["status"] == "error"
    assert by_path["0.parallel.tolerant"]["status"] == "recovered"
    assert "0.parallel.tolerant.on_error.0" in by_path


async def test_a_failing_branch_fails_the_step_and_cancels_the_others(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(30)
        return web.Response(text="late")

    async with serve_app({"/hang": hang}) as base:
        flow = f"""
trigger: {{http: {{}}}}
steps:
  - parallel:
      slow: [{{http: {{url: "{base}/hang", method: GET}}}}]
      broken: [{{log: "x"}}, {{template: "{{{{ input.nope.deeper }}}}"}}]
"""
        async with run_daemon(tmp_path, {"p": flow}) as d:
            status, body, run_id = await post(d, "p", {})
            assert status == 422, body
            assert "nope" in body["error"]["message"]
            record = await run_record(d, run_id)
    statuses = {s["path"]: s["status"] for s in record["steps"]}
    assert statuses["0.parallel.broken.1"] == "error"
    assert statuses["0.parallel.slow.0"] == "cancelled"


async def test_a_run_timeout_reaches_every_branch(tmp_path: Path) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async with serve_app({"/hang": hang}) as base:
        flow = f"""
trigger: {{http: {{}}}}
timeout: 300ms
steps:
  - map:
      over: [1, 2, 3]
      steps: [{{http: {{url: "{base}/hang", method: GET}}}}]
"""
        async with run_daemon(tmp_path, {"t": flow}) as d:
            status, body, run_id = await post(d, "t", {})
            assert status == 504, body
            record = await run_record(d, run_id)
    nested = [s for s in record["steps"] if s["path"].startswith("0.map[")]
    assert len(nested) == 3 and all(s["status"] == "cancelled" for s in nested)


SWITCH = """
trigger: {http: {}}
steps:
  - switch:
      - {when: "input.kind == 'bug'", steps: [{template: "bug: {{ input.title }}"}]}
      - {when: "input.kind == 'idea'", steps: [{template: "idea"}, {template: "{{ input }}!"}]}
      - {steps: [{template: "other: {{ input.title }}"}]}
"""


async def test_switch_takes_the_first_true_case_or_the_default(tmp_path: Path) -> None:
    no_default = "trigger: {http: {}}\nsteps:\n  - switch:\n" \
                 "      - {when: 'input.kind == 1', steps: [{template: one}]}\n"
    async with run_daemon(tmp_path, {"s": SWITCH, "n": no_default}) as d:
        assert (await post(d, "s", {"kind": "bug", "title": "T"}))[:2] == (200, "bug: T")
        assert (await post(d, "s", {"kind": "idea"}))[:2] == (200, "idea!")
        status, body, run_id = await post(d, "s", {"kind": "x", "title": "T"})
        assert (status, body) == (200, "other: T")
        record = await run_record(d, run_id)
        assert record["steps"][0]["detail"]["case"] == 2
        assert [s["path"] for s in record["steps"]] == ["0", "0.switch[2].0"]
        # no case matches: the input passes on
        assert (await post(d, "n", {"kind": 2}))[:2] == (200, {"kind": 2})


@pytest.mark.usefixtures("chunks_step")
async def test_switch_case_streams_to_websocket_clients(tmp_path: Path) -> None:
    flow = """
trigger: {websocket: {}}
steps:
  - switch:
      - when: "input == 'stream'"
        steps: [{chunks: {text: "one two three", delay: 0.01}}]
"""
    async with run_daemon(tmp_path, {"w": flow}) as d:
        async with d.http.ws_connect(d.url("/ws/w")) as ws:
            await ws.send_str("stream")
            deltas, result = [], None
            while result is None:
                msg = json.loads((await ws.receive()).data)
                if msg["type"] == "delta":
                    deltas.append(msg["text"])
                elif msg["type"] in ("result", "error"):
                    result = msg
    assert result["type"] == "result", result
    assert deltas == ["one ", "two ", "three"]
    assert result["output"] == "one two three"


async def test_retry_then_success_and_on_error_handlers(tmp_path: Path) -> None:
    calls = {"flaky": 0}

    async def flaky(request: web.Request) -> web.Response:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            return web.Response(status=503, text="busy")
        return web.json_response({"ok": calls["flaky"]})

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    async with serve_app({"/flaky": flaky, "/down": down}) as base:
        flow = f"""
trigger: {{http: {{}}}}
steps:
  - http: {{url: "{base}/flaky", method: GET}}
    retry: {{attempts: 3, delay: 10ms, backoff: 2}}
    as: flaky
  - http: {{url: "{base}/down", method: GET}}
    retry: {{attempts: 2, delay: 10ms}}
    on_error: continue
  - http: {{url: "{base}/down", method: GET}}
    on_error:
      - template: "{{{{ {{'handled': input.step, 'input_was': input.input.ok,
                       'said_500': '500' in input.error}} }}}}"
    as: handled
  - template: "{{{{ {{'flaky': vars.flaky, 'handled': vars.handled, 'now': input}} }}}}"
"""
        async with run_daemon(tmp_path, {"r": flow}) as d:
            status, body, run_id = await post(d, "r", {})
            assert status == 200, body
            record = await run_record(d, run_id)
    assert body == {"flaky": {"ok": 3}, "handled": {"handled": "http", "input_was": 3,
                                                    "said_500": True},
                    "now": {"handled": "http", "input_was": 3, "said_500": True}}
    steps = {s["path"]: s for s in record["steps"]}
    assert steps["0"]["detail"]["attempts"] == 3 and len(steps["0"]["detail"]["retried"]) == 2
    assert steps["1"]["status"] == "recovered" and len(steps["1"]["detail"]["retried"]) == 1
    assert steps["2"]["status"] == "recovered" and "2.on_error.0" in steps


async def test_retry_gives_up_after_its_attempts(tmp_path: Path) -> None:
    calls = 0

    async def down(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=500, text="down")

    async with serve_app({"/down": down}) as base:
        flow = f"""
trigger: {{http: {{}}}}
steps:
  - http: {{url: "{base}/down", method: GET}}
    retry: {{attempts: 3, delay: 5ms}}
"""
        async with run_daemon(tmp_path, {"r": flow}) as d:
            status, body, _ = await post(d, "r", {})
    assert status == 502 and "answered 500" in body["error"]["message"]
    assert calls == 3


def _errors(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "bad.yaml").write_text(text)
    return [str(e) for e in check([tmp_path]).errors]


@pytest.mark.parametrize(("text", "want"), [
    ("trigger: {http: {}}\nsteps:\n  - map:\n      over: [1]\n      steps:\n"
     "        - templat: x\n",
     "bad.yaml:6:11: unknown step 'templat' in step 1 (map) steps/0; did you mean "
     "'template'?"),
    ("trigger: {http: {}}\nsteps:\n  - parallel:\n      a:\n        - template: x\n"
     "          whn: y\n",
     "bad.yaml:6:11: unknown key 'whn' in step 1 (parallel) a/0; did you mean 'when'?"),
    ("trigger: {http: {}}\nsteps:\n  - map: {over: [1], concurrency: 0, "
     "steps: [{template: x}]}\n",
     "bad.yaml:3:35: step 1 (map) concurrency: 0 is less than the minimum of 1"),
    ("trigger: {http: {}}\nsteps:\n  - switch:\n      - {steps: [{template: a}]}\n"
     "      - {steps: [{template: b}]}\n",
     "switch has two default cases (1 and 2"),
    ("trigger: {http: {}}\nsteps:\n  - switch:\n      - {steps: [{template: a}]}\n"
     "      - {when: 'true', steps: [{template: b}]}\n",
     "comes after the default case"),
    ("trigger: {http: {}}\nsteps:\n  - map:\n      over: [1]\n      steps:\n"
     "        - pipeline: bad\n",
     "bad.yaml:6:21: pipeline 'bad' calls itself inside map"),
    ("trigger: {http: {}}\nsteps:\n  - template: x\n    on_error: continu\n",
     "did you mean 'continue'?"),
    ("trigger: {http: {}}\nsteps:\n  - template: x\n    retry: {attempts: 0}\n",
     "bad.yaml:4:23:"),
    ("trigger: {http: {}}\nsteps:\n  - template: x\n    on_error:\n      - lgo: x\n",
     "bad.yaml:5:9: unknown step 'lgo' in step 1 on_error/0; did you mean 'log'?"),
])
def test_nested_mistakes_are_positioned(tmp_path: Path, text: str, want: str) -> None:
    errors = _errors(tmp_path, text)
    assert any(want in e for e in errors), errors
