"""The console's server side without a browser: the token and its cookie, /api/router,
streamed runs through the admin API, the run filters, the log tail and the waterfall."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from harkd.console.views import depth, excerpt, waterfall
from harkd.logs import LogTail
from harkd.testing import run_daemon

pytestmark = pytest.mark.anyio

OK = "trigger: {http: {}}\nsteps:\n  - template: 'ok {{ input.n }}'\n"
TOKEN = "console-token-123"


async def test_the_console_needs_the_token_and_keeps_it_in_a_cookie(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK}, token=TOKEN) as handle, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        d = dataclasses.replace(handle, http=http)  # a jar that keeps cookies of 127.0.0.1
        async with d.http.get(d.url("/ui/runs?status=ok&pipeline=ok"),
                              allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == (
                "/ui/login?next=/ui/runs?status%3Dok%26pipeline%3Dok")
        async with d.http.get(d.url(r.headers["Location"])) as r:
            assert 'value="/ui/runs?status=ok&amp;pipeline=ok"' in await r.text()
        async with d.http.get(d.url("/ui/static/console.css")) as r:
            assert r.status == 200  # the sign-in page needs its stylesheet
        async with d.http.get(d.url("/ui/events"), allow_redirects=False) as r:
            assert r.status == 303
        async with d.http.post(d.url("/ui/login"), data={"token": "wrong", "next": "/"},
                               allow_redirects=False) as r:
            assert r.status == 401 and "not right" in await r.text()
        async with d.http.post(d.url("/ui/login"),
                               data={"token": TOKEN, "next": "//evil.example/"},
                               allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"  # no open redirect
            cookie = r.cookies["harkd_token"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with d.http.get(d.url("/")) as r:
            assert r.status == 200 and "<h1>Pipelines" in await r.text()
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        async with d.http.get(d.url("/api/router")) as r:
            assert r.status == 200  # the console's cookie reads the API too
        # ...but a change through the cookie must come from the console's own origin
        async with d.http.post(d.url("/api/pipelines/ok/run"), json={"n": 1}) as r:
            assert r.status == 403
        async with d.http.post(d.url("/api/pipelines/ok/run"), json={"n": 1},
                               headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with d.http.post(d.url("/api/pipelines/ok/run"), json={"n": 2},
                               headers={"Origin": d.base}) as r:
            assert r.status == 200 and await r.text() == "ok 2"
        async with d.http.post(d.url("/ui/logout"), headers={"Origin": d.base},
                               allow_redirects=False) as r:
            assert r.status == 303
        d.http.cookie_jar.clear()
        async with d.http.get(d.url("/api/router")) as r:
            assert r.status == 401


async def test_error_excerpts_redact_secrets(tmp_path: Path) -> None:
    bad = f"trigger: {{http: {{}}}}\nsteps:\n  - templat: {TOKEN}\n"
    # from harkd.yaml, as a real daemon reads it (which tells the redactor)
    async with run_daemon(tmp_path, {"bad": bad}, config=f"server: {{token: {TOKEN}}}\n") as d:
        async with d.http.get(d.url("/"), headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            html = await r.text()
    assert "- templat: " in html and TOKEN not in html


async def test_api_router_reports_health_breakers_and_errors(tmp_path: Path) -> None:
    config = ("models:\n  dead: [{model: openai/x, api_base: 'http://127.0.0.1:9/v1'}]\n"
              "router: {retries: 0, failures: 1, cooldown: 10m}\n")
    pipe = "trigger: {http: {}}\nsteps:\n  - llm: {model: dead, prompt: hi}\n"
    async with run_daemon(tmp_path, {"ask": pipe}, config=config) as d:
        async with d.http.get(d.url("/api/openapi.json")) as r:
            doc = await r.json()
        schema = {"components": doc["components"],
                  **doc["paths"]["/api/router"]["get"]["responses"]["200"]["content"][
                      "application/json"]["schema"]}

        async def report() -> Any:
            async with d.http.get(d.url("/api/router")) as r:
                body = await r.json()
            jsonschema.Draft202012Validator(schema).validate(body)
            return body

        before = await report()
        assert before["aliases"]["dead"][0]["health"] == "ok"
        assert before["recent_errors"] == [] and before["open_breakers"] == []
        async with d.http.post(d.url("/hooks/ask")) as r:
            assert r.status == 502
        after = await report()
        row = after["aliases"]["dead"][0]
        assert (row["health"], row["breaker"], row["failures"]) == ("cooling", "open", 1)
        assert 0 < row["cooldown_left"] <= 600
        assert after["open_breakers"] == [{"alias": "dead", "deployment": "openai/x",
                                           "cooldown_left": row["cooldown_left"]}]
        [error] = after["recent_errors"]
        assert error["deployment"] == "openai/x" and "unreachable" in error["error"]


async def test_run_page_lists_llm_fallbacks_and_each_attempt(tmp_path: Path) -> None:
    from harkd.testing_upstream import Reply, ScriptedUpstream

    async with ScriptedUpstream() as up:
        up.plan("m1", Reply(status=500))
        config = (f"models:\n  smart:\n    - {{model: openai/m1, api_base: '{up.v1}'}}\n"
                  f"    - {{model: openai/m2, api_base: '{up.v1}'}}\n"
                  "router: {retries: 0}\n")
        pipe = "trigger: {http: {}}\nsteps:\n  - llm: {model: smart, prompt: hi}\n"
        async with run_daemon(tmp_path, {"ask": pipe}, config=config) as d:
            async with d.http.post(d.url("/hooks/ask")) as r:
                assert await r.text() == "echo: hi"
                run_id = r.headers["X-Harkd-Run-Id"]
            async with d.http.get(d.url(f"/ui/runs/{run_id}")) as r:
                html = await r.text()
    calls = html[html.index('id="llm"'):]
    row = calls[:calls.index("</tr>", calls.index("<tbody>"))]
    assert "openai/m2" in row and '<td class="num">1</td>' in row  # one fallback
    attempts = calls[calls.index('class="attempts"'):calls.index("</ol>")]
    assert attempts.index("openai/m1") < attempts.index("openai/m2")
    assert "error" in attempts and "ok" in attempts


async def test_api_run_streams_server_sent_events(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK}) as d:
        async with d.http.post(d.url("/api/pipelines/ok/run"), json={"input": {"n": 3}},
                               headers={"Accept": "text/event-stream"}) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in (await r.text()).splitlines()
                      if line.startswith("data: ")]
        assert events == [{"type": "result", "output": "ok 3", "run_id": r.headers[
            "X-Harkd-Run-Id"]}]


async def test_runs_filter_by_start_time(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK}) as d:
        await (await d.http.post(d.url("/hooks/ok"), json={"n": 1})).release()
        middle = time.time()
        await (await d.http.post(d.url("/hooks/ok"), json={"n": 2})).release()
        for query, count in ((f"since={middle}", 1), (f"until={middle}", 1), ("since=0", 2)):
            async with d.http.get(d.url(f"/api/runs?{query}")) as r:
                assert len((await r.json())["runs"]) == count, query
        async with d.http.get(d.url("/api/runs?since=nan")) as r:
            assert r.status == 400
        async with d.http.get(d.url("/ui/runs?within=1h&status=ok")) as r:
            text = await r.text()
        assert text.count('class="badge ok"') == 2


async def test_pipelines_cannot_claim_the_console(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"x": "trigger: {http: {path: /ui/x}}\nsteps: [{log: hi}]\n",
                                     "y": "trigger: {http: {path: /}}\nsteps: [{log: hi}]\n"}) as d:
        assert d.state("x") == "rejected" and d.state("y") == "rejected"
        async with d.http.get(d.url("/")) as r:
            assert (await r.text()).count("is reserved for harkd itself") == 2


def test_log_tail_keeps_the_newest_lines() -> None:
    tail = LogTail(3)
    for n in range(5):
        tail({"event": "e", "n": n, "obj": object()})
    assert [line["n"] for line in tail.since(0)] == [2, 3, 4]
    assert [line["seq"] for line in tail.since(4)] == [5]
    assert tail.since(0)[0]["obj"].startswith("<object")  # made JSON-safe
    with pytest.raises(ValueError):
        LogTail(0)


def test_waterfall_indents_nested_steps_by_path() -> None:
    paths = ["0", "2", "2.map[3].0", "1.parallel.short.0", "3.switch[0].1",
             "2.map[0].1.parallel.a.0"]
    assert [depth(p) for p in paths] == [0, 0, 1, 1, 1, 2]
    t0 = 1000.0
    record = {"started": t0, "duration_ms": 100.0, "steps": [
        {"index": 0, "path": "0", "kind": "map", "started": t0, "duration_ms": 100.0,
         "status": "ok"},
        {"index": 0, "path": "0.map[0].0", "kind": "template", "started": t0 + 0.05,
         "duration_ms": 50.0, "status": "error"},
        {"index": 1, "kind": "log", "started": t0 + 0.1, "duration_ms": 0.0,
         "status": "skipped"},  # an older record: no path
        {"omitted": 7},
    ]}
    rows = waterfall(record)
    assert [(r["path"], r.get("depth")) for r in rows[:3]] == [("0", 0), ("0.map[0].0", 1),
                                                               ("1", 0)]
    assert (rows[1]["left"], rows[1]["width"]) == (50.0, 50.0)
    assert rows[2]["width"] == 0.4  # a zero-length step still shows
    assert rows[3]["omitted"] == 7


def test_excerpt_marks_the_line(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("a\nb\nc\nd\ne\nf\n")
    assert excerpt(str(f), 4) == [(2, "b", False), (3, "c", False), (4, "d", True),
                                  (5, "e", False), (6, "f", False)]
    assert excerpt(str(f), 99) == [] and excerpt(str(tmp_path / "gone"), 1) == []


def test_the_console_bench_produces_its_figures() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / "console.py"), "--runs", "300",
                           "--repeats", "3"], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "runs page, first 50 (no filter)" in proc.stdout and "total" in proc.stdout
