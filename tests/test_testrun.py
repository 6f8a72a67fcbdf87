"""`harkd test`: pipeline files' tests: run in-process, as the real command line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from test_cli_check import REPO, harkd

GOOD = """
trigger: {http: {}}
steps:
  - http: {url: "https://api.example/items/{{ input.id }}", method: GET}
    as: item
  - llm: {prompt: "Describe {{ vars.item.name }}", stream: true}
    as: text
  - template: "{{ vars.item.name }}: {{ input }}"
tests:
  - name: describes an item
    input: {id: 7}
    steps: {item: {name: lamp}}
    models: {default: "A lamp that glows."}
    expect: {output: "lamp: A lamp that glows.", vars: {text: "A lamp that glows."}}
  - name: a list of replies is taken in turn
    input: {id: 7}
    steps: {item: {name: lamp}}
    models: {default: ["first", "second"]}
    expect: {contains: first, matches: "^lamp: f"}
  - name: wrong on purpose
    input: {id: 7}
    steps: {item: {name: lamp}}
    models: {default: "glows"}
    expect: {output: "lamp: shines"}
  - name: not stubbed reaches for the network
    input: {id: 7}
    models: {default: "x"}
    expect: {output: "never"}
  - name: no reply for the model
    input: {id: 7}
    steps: {item: {name: lamp}}
    expect: {error: "the test gives no reply for model 'default'"}
"""


def test_shipped_pipelines_pass() -> None:
    r = harkd("test", "pipelines")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].endswith(" passed, 0 failed")
    passed = int(lines[-1].split()[0])
    names = {Path(p).name for p in (REPO / "pipelines").glob("*.yaml")}
    tested = {line.split()[1].rstrip(":") for line in lines if line.startswith("ok ")}
    assert tested == names, f"pipelines without tests: {names - tested}"
    assert passed >= 2 * len(names) - 3


def test_failures_are_explained_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "item.yaml").write_text(GOOD)
    junit = tmp_path / "report.xml"
    r = harkd("test", str(tmp_path), "--junit", str(junit))
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "ok   item.yaml: describes an item" in "\n".join(out)
    assert any(line.startswith("ok   item.yaml: a list of replies") for line in out)
    assert any(line.startswith("ok   item.yaml: no reply for the model") for line in out)
    assert 'FAIL item.yaml: wrong on purpose: expected output "lamp: shines", got ' \
           '"lamp: glows"' in out
    assert any(line.startswith("FAIL item.yaml: not stubbed reaches for the network: the run "
                               "failed: GET https://api.example/items/7: tests do not reach "
                               "the network") for line in out)
    assert out[-1] == "3 passed, 2 failed"
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "5" and suite.get("failures") == "2"
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failures == ["wrong on purpose", "not stubbed reaches for the network"]


def test_k_selects_tests_by_name(tmp_path: Path) -> None:
    (tmp_path / "item.yaml").write_text(GOOD)
    r = harkd("test", str(tmp_path / "item.yaml"), "-k", "describes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_tests_that_no_longer_validate_fail_with_positions(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "trigger: {http: {}}\nsteps:\n  - template: hi\n    as: greeting\n"
        "tests:\n  - name: stubs a step that is gone\n    steps: {greting: x}\n"
        "    expect: {output: x}\n")
    (tmp_path / "b.yaml").write_text(
        "trigger: {http: {}}\nsteps: [{template: hi}]\n"
        "tests:\n  - name: bad expect\n    expect: {outptu: hi}\n")
    r = harkd("test", str(tmp_path))
    assert r.returncode == 1
    out = r.stdout
    assert f"FAIL {tmp_path}/a.yaml:7:13: test 'stubs a step that is gone' stubs step " \
           "'greting', but no step has `as: greting` (named steps: greeting)" in out
    assert f"FAIL {tmp_path}/b.yaml:5:14: unknown key 'outptu'" in out
    assert "did you mean 'output'?" in out
    assert out.splitlines()[-1] == "0 passed, 2 failed"
    # harkd check reports the same errors
    assert harkd("check", str(tmp_path)).returncode == 78


def test_pipeline_steps_call_the_folders_other_pipelines(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text(
        "trigger: {http: {}}\nsteps: [{template: '{{ input | upper }}'}]\n")
    (tmp_path / "outer.yaml").write_text(
        "trigger: {cron: {schedule: '0 7 * * *'}}\nsteps:\n"
        "  - map: {over: '{{ input }}', steps: [{pipeline: inner}]}\n"
        "tests:\n  - name: maps through inner\n    input: [a, b]\n"
        "    expect: {output: [A, B]}\n")
    r = harkd("test", str(tmp_path / "outer.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "1 passed, 0 failed"


LIVE = """
trigger: {http: {}}
steps:
  - http: {url: "BASE/item", method: GET}
    as: item
  - llm: {prompt: "Describe {{ vars.item.name }}"}
tests:
  - name: reaches the network and the configured model
    input: {}
    expect: {output: "A lamp, live."}
"""


@pytest.mark.anyio
async def test_live_uses_the_network_and_the_configured_models(tmp_path: Path) -> None:
    import asyncio
    import json
    import sys

    from aiohttp import web

    from harkd.testing import serve_app
    from harkd.testing_upstream import Reply, ScriptedUpstream

    async def item(request: web.Request) -> web.Response:
        return web.json_response({"name": "lamp"})

    async with ScriptedUpstream() as up, serve_app({"/item": item}) as base:
        up.default("m", Reply(text="A lamp, live."))
        (tmp_path / "live.yaml").write_text(LIVE.replace("BASE", base))
        config = tmp_path / "harkd.yaml"
        config.write_text(json.dumps({"models": {"default": [
            {"model": "openai/m", "api_base": up.v1, "api_key": "x"}]}}))

        async def run(*extra: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "harkd", "test", "--config", str(config),
                str(tmp_path / "live.yaml"), *extra, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode is not None
            return proc.returncode, out.decode()

        code, out = await run()
        assert code == 1 and "tests do not reach the network" in out, out
        code, out = await run("--live")
        assert code == 0, out
        assert out.splitlines()[-1] == "1 passed, 0 failed"
    assert up.last("m").body["messages"][-1]["content"] == "Describe lamp"
