"""template, set, log, http and pipeline steps, with `as` and `when`, in a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from harkd.testing import capture_logs, run_daemon, serve_app

pytestmark = pytest.mark.anyio


async def post(d, name: str, body: object) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    async with d.http.post(d.url(f"/hooks/{name}"), json=body) as r:
        return r.status, (await r.json() if r.content_type == "application/json"
                          else await r.text())


async def test_set_as_when_and_data_flow(tmp_path: Path) -> None:
    flow = """
trigger: {http: {}}
steps:
  - set: {n: "input.n * 2", label: "'double'", raw: [1, 2]}
  - template: "{{ vars.label }}={{ vars.n }}"
    as: first
  - template: "skipped"
    when: "vars.n > 100"
  - template: "{{ {'first': vars.first, 'prev': input, 'raw': vars.raw, 'orig': run.input} }}"
"""
    async with run_daemon(tmp_path, {"flow": flow}) as d:
        status, body = await post(d, "flow", {"n": 3})
    assert status == 200
    assert body == {"first": "double=6", "prev": "double=6", "raw": [1, 2], "orig": {"n": 3}}


async def test_log_step_writes_a_structured_line(tmp_path: Path) -> None:
    yaml = "trigger: {http: {}}\nsteps:\n  - log: {message: 'got {{ input.x }}', level: warning}\n"
    async with run_daemon(tmp_path, {"l": yaml}) as d:
        with capture_logs() as logs:
            status, body = await post(d, "l", {"x": 7})
    assert status == 200 and body == {"x": 7}
    line = next(e for e in logs if e["event"] == "pipeline_log")
    assert line["message"] == "got 7" and line["log_level"] == "warning"
    assert line["pipeline"] == "l"


async def test_http_step_json_text_and_failures(tmp_path: Path) -> None:
    async def echo_json(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "got": await request.json(),
                                  "h": request.headers.get("X-Test")})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain answer")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="upstream broke")

    async with serve_app({"/json": echo_json, "/text": text, "/fail": fail}) as base:
        files = {
            "j": f"""
trigger: {{http: {{}}}}
steps:
  - http:
      url: "{base}/json"
      headers: {{X-Test: "{{{{ input.h }}}}"}}
      json: {{value: "{{{{ input.v }}}}", fixed: 1}}
""",
            "t": f"trigger: {{http: {{}}}}\nsteps:\n  - http: {base}/text\n",
            "f": f"trigger: {{http: {{}}}}\nsteps:\n  - http: {{url: '{base}/fail'}}\n",
            "nf": (f"trigger: {{http: {{}}}}\nsteps:\n"
                   f"  - http: {{url: '{base}/fail', fail: false}}\n"),
        }
        async with run_daemon(tmp_path, files) as d:
            assert await post(d, "j", {"v": [1, 2], "h": "yes"}) == (
                200, {"method": "POST", "got": {"value": [1, 2], "fixed": 1}, "h": "yes"})
            assert await post(d, "t", {}) == (200, "plain answer")
            status, body = await post(d, "f", {})
            assert status == 502
            assert "answered 500: upstream broke" in json.dumps(body)
            assert await post(d, "nf", {}) == (200, "upstream broke")


async def test_http_step_to_a_closed_port_fails_cleanly(tmp_path: Path) -> None:
    from harkd.testing import free_port

    yaml = f"trigger: {{http: {{}}}}\nsteps:\n  - http: http://127.0.0.1:{free_port()}/\n"
    async with run_daemon(tmp_path, {"c": yaml}) as d:
        status, body = await post(d, "c", {})
    assert status == 502 and "failed" in json.dumps(body)


async def test_pipeline_step_calls_another_and_guards_recursion(tmp_path: Path) -> None:
    files = {
        "inner": "trigger: {http: {}}\nsteps:\n  - template: 'inner({{ input.x }})'\n",
        "outer": ("trigger: {http: {}}\nsteps:\n  - pipeline: inner\n"
                  "  - pipeline: {name: inner, input: {x: '{{ input }}'}}\n"),
        "loop": "trigger: {http: {}}\nsteps:\n  - pipeline: loop\n",
        "missing": "trigger: {http: {}}\nsteps:\n  - pipeline: nowhere\n",
    }
    async with run_daemon(tmp_path, files) as d:
        assert await post(d, "outer", {"x": 1}) == (200, "inner(inner(1))")
        status, body = await post(d, "loop", {})
        assert status == 508 and "deep" in json.dumps(body)
        status, body = await post(d, "missing", {})
        assert status == 502 and "'nowhere' is not loaded" in json.dumps(body)
