"""``server.loop``: ``harkd run`` serves on uvloop when it is installed (``auto``), or on
asyncio's own loop; the daemon's own HTTP client (the router's wire connections) works on
both. Each test starts the real ``harkd run`` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from harkd.testing import spawn_daemon
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio

HELLO = "trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input.name }}'\n"
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "a b c"}]}


def ready_line(output: str) -> dict[str, object]:
    return next(json.loads(line) for line in output.splitlines()
                if line.startswith("{") and '"daemon_ready"' in line)


@pytest.mark.parametrize("flag, loop", [((), "uvloop"), (("--loop", "asyncio"), "asyncio"),
                                        (("--loop", "uvloop"), "uvloop")])
async def test_the_gateway_proxies_on_each_loop(tmp_path: Path, flag: tuple[str, ...],
                                                loop: str) -> None:
    async with ScriptedUpstream() as up:
        config = tmp_path / "harkd.yaml"
        config.write_text(f"models:\n  fast:\n    - {{model: openai/m1, api_base: '{up.v1}'}}\n"
                          f"    - {{model: openai/m2, api_base: '{up.v1}'}}\n"
                          "router: {backoff: 1ms, retries: 0}\nlog: {format: json}\n")
        with spawn_daemon(tmp_path, {"hello": HELLO}, args=("--config", str(config), *flag)) as d:
            assert ready_line(d.output())["loop"] == loop
            async with aiohttp.ClientSession() as http:
                async with http.post(d.url("/hooks/hello"), json={"name": "Ada"}) as resp:
                    assert await resp.text() == "hi Ada"
                up.plan("m1", Reply(status=500))  # the first deployment fails: fallback
                async with http.post(d.url("/v1/chat/completions"), json=CHAT) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert body["choices"][0]["message"]["content"] == "echo: a b c"
                    assert resp.headers["X-Harkd-Deployment"].endswith("m2")
                for _ in range(3):  # streamed, over the kept wire connection
                    async with http.post(d.url("/v1/chat/completions"),
                                         json={**CHAT, "stream": True}) as resp:
                        text = await resp.text()
                    assert resp.status == 200 and text.endswith("data: [DONE]\n\n")
                    chunks = [json.loads(line[6:]) for line in text.splitlines()
                              if line.startswith("data: {")]
                    assert "".join(c["choices"][0]["delta"].get("content") or ""
                                   for c in chunks if c["choices"]) == "echo: a b c"
        assert (up.calls("m1"), up.calls("m2")) == (4, 1)


def test_an_unknown_loop_is_a_configuration_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harkd", "run", "--pipelines", str(tmp_path),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          env={"HARKD_LOOP": "libev", "HARKD_STATE": str(tmp_path / "s"),
                               "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 78
    assert "server.loop (from HARKD_LOOP or the command line): 'libev' is not one of" \
        in done.stderr


def test_without_uvloop_auto_is_asyncio_and_uvloop_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harkd.cli import loop_factory

    assert loop_factory("auto") is not None and loop_factory("asyncio") is None
    # uvloop hidden as if it were not installed (sys.modules[name] = None fails its import)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert loop_factory("auto") is None
    with pytest.raises(ImportError):
        loop_factory("uvloop")
    code = ("import sys; sys.modules['uvloop'] = None; from harkd.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "run", "--pipelines", str(tmp_path),
                           "--listen", "127.0.0.1:0", "--state", str(tmp_path / "s"),
                           "--loop", "uvloop"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HARKD_CONFIG": ""})
    assert done.returncode == 78
    assert "server.loop is uvloop, which is not installed" in done.stderr
