"""`harkd talk` in text mode, as the real command line against a real daemon."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from harkd.testing import run_daemon
from streamstep import chunks_step  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


async def harkd(*args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HARKD_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harkd", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


CHAT = """
trigger: {websocket: {}}
steps:
  - switch:
      - when: "input is mapping"
        steps: [{template: "{{ input }}"}]
      - when: "input == 'fail'"
        steps: [{template: "{{ input.nope.deeper }}"}]
      - steps: [{chunks: "you said {{ input }}"}]
"""


@pytest.mark.usefixtures("chunks_step")
async def test_talk_sends_each_line_and_prints_streams_results_and_errors(
        tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"chat": CHAT, "hook": "trigger: {http: {}}\n"
                                     "steps: [{template: x}]\n"}) as d:
        base = d.url("").rstrip("/")
        code, out, err = await harkd("talk", "chat", "--url", base,
                                     stdin='hello there\n{"a": 1}\nfail\n')
        assert out.splitlines() == ["you said hello there", '{"a": 1}']
        assert "error: " in err and "nope" in err
        assert code == 1
        code, out, err = await harkd("talk", "hook", "--url", base, stdin="x\n")
        assert code == 69 and "has a http trigger, not a websocket one" in err
        code, out, err = await harkd("talk", "ghost", "--url", base, stdin="x\n")
        assert code == 69 and "says 404 for pipeline 'ghost'" in err


async def test_talk_without_a_daemon_says_so() -> None:
    code, _, err = await harkd("talk", "chat", "--url", "http://127.0.0.1:9", stdin="x\n")
    assert code == 69 and "no daemon answers at http://127.0.0.1:9" in err
