from __future__ import annotations

from pathlib import Path

import pytest

from harkd.testing import run_daemon

pytestmark = pytest.mark.anyio

ECHO = "trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input.name }}'\n"


async def test_webhook_answers_and_reloads(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        async with d.http.post(d.url("/hooks/echo"), json={"name": "Ada"}) as resp:
            assert resp.status == 200
            assert await resp.text() == "hi Ada"
            assert resp.headers["X-Harkd-Run-Id"]
        await d.write("echo", ECHO.replace("hi", "bye"))
        async with d.http.post(d.url("/hooks/echo"), json={"name": "Ada"}) as resp:
            assert await resp.text() == "bye Ada"
