"""Reload semantics of DESIGN.md, against a real daemon watching a real folder."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import pytest

from harkd.testing import run_daemon, serve_app, spawn_daemon, wait_until

pytestmark = pytest.mark.anyio

ECHO = "trigger: {http: {}}\nsteps:\n  - template: 'v1 {{ input }}'\n"
BROKEN = "trigger: {http: {}}\nsteps:\n  - templat: 'oops'\n"


async def text(d, path: str, body: str = "x") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    async with d.http.post(d.url(path), data=body) as resp:
        return resp.status, await resp.text()


async def test_invalid_edit_keeps_serving_the_last_good_version(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        assert await text(d, "/hooks/echo") == (200, "v1 x")
        await d.write("echo", BROKEN)
        assert d.state("echo") == "stale"
        assert await text(d, "/hooks/echo") == (200, "v1 x")
        async with d.http.get(d.url("/api/pipelines/echo")) as resp:
            info = await resp.json()
        assert info["state"] == "stale" and info["version"] == 1
        (err,) = info["errors"]
        assert err["line"] == 3 and err["pointer"] == "/steps/0/templat"
        assert "did you mean 'template'" in err["message"]
        await d.write("echo", ECHO.replace("v1", "v2"))
        assert d.state("echo") == "active"
        assert await text(d, "/hooks/echo") == (200, "v2 x")


async def test_new_invalid_file_is_rejected_and_others_keep_serving(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        await d.write("bad", BROKEN)
        assert d.state("bad") == "rejected"
        assert (await text(d, "/hooks/bad"))[0] == 404
        assert await text(d, "/hooks/echo") == (200, "v1 x")


async def test_added_and_deleted_files(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        assert (await text(d, "/hooks/new"))[0] == 404
        await d.write("new", ECHO)
        assert await text(d, "/hooks/new") == (200, "v1 x")
        await d.remove("new")
        status, body = await text(d, "/hooks/new")
        assert status == 404 and "no pipeline serves /hooks/new" in body


async def test_route_conflict_rejects_the_second_naming_the_first(tmp_path: Path) -> None:
    first = "trigger: {http: {path: /hooks/shared}}\nsteps: [{template: first}]\n"
    second = "trigger: {http: {path: /hooks/shared}}\nsteps: [{template: second}]\n"
    async with run_daemon(tmp_path, {"a": first}) as d:
        await d.write("b", second)
        assert d.state("b") == "rejected"
        entry = d.daemon.catalog.entries["b"]
        assert "already served by pipeline 'a'" in entry.errors[0].message
        assert str(d.path("a")) in entry.errors[0].message
        assert await text(d, "/hooks/shared") == (200, "first")
        # Once the first lets go of the route, the second one takes it.
        await d.remove("a")
        await wait_until(lambda: d.state("b") == "active")
        assert await text(d, "/hooks/shared") == (200, "second")


async def test_editor_temp_files_are_ignored(tmp_path: Path) -> None:
    async with run_daemon(tmp_path) as d:
        for name in (".echo.yaml.swp", "echo.yaml~", "#echo.yaml#", ".#echo.yaml", "4913",
                     "echo.yaml.tmp", "notes.txt"):
            (d.folder / name).write_text(BROKEN)
        await d.write("real", ECHO)
        await asyncio.sleep(0.2)
        assert set(d.daemon.catalog.entries) == {"real"}


async def test_in_flight_runs_finish_on_their_version(tmp_path: Path) -> None:
    slow = ("trigger: {http: {}}\nsteps:\n"
            "  - http: {url: '{{ input }}'}\n  - template: 'old {{ input }}'\n")
    wait = "trigger: {http: {}}\nsteps:\n  - template: ready\n"
    async with run_daemon(tmp_path, {"slow": slow, "wait": wait}) as d:
        # The old version's run is held open by a request to a slow endpoint of our own.
        gate = asyncio.Event()
        from aiohttp import web

        async def hold(request: web.Request) -> web.Response:
            await gate.wait()
            return web.Response(text="held")

        async with serve_app({"/": hold}) as base:
            pending = asyncio.create_task(text(d, "/hooks/slow", base + "/"))
            await wait_until(lambda: d.daemon.catalog.bound("slow").inflight)  # type: ignore[union-attr]
            await d.write("slow", slow.replace("old", "new"))
            assert d.daemon.catalog.entries["slow"].version == 2
            gate.set()
            assert await pending == (200, "old held")
            assert await text(d, "/hooks/slow", base + "/") == (200, "new held")


async def test_unchanged_touch_does_not_reload(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        d.path("echo").write_text(ECHO)
        await d.write("other", ECHO)
        assert d.daemon.catalog.entries["echo"].version == 1


async def test_one_change_among_many_reloads_only_that_file(tmp_path: Path) -> None:
    files = {f"p{i:03d}": ECHO for i in range(200)}
    async with run_daemon(tmp_path, files) as d:
        loaded: list[str] = []
        d.daemon.catalog.listeners.append(lambda e, what: loaded.append(e.name))
        await d.write("p007", ECHO.replace("v1", "v2"))
        await asyncio.sleep(0.1)
        assert loaded == ["p007"]
        assert await text(d, "/hooks/p007") == (200, "v2 x")


async def test_config_reload_rebuilds_settings(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}, config="server: {token: one}\n") as d:
        async with d.http.get(d.url("/api/pipelines"),
                              headers={"Authorization": "Bearer one"}) as resp:
            assert resp.status == 200
        (tmp_path / "harkd.yaml").write_text("server: {token: two}\n")
        await wait_until(lambda: d.daemon.settings.token == "two")
        async with d.http.get(d.url("/api/pipelines"),
                              headers={"Authorization": "Bearer one"}) as resp:
            assert resp.status == 401


def test_sighup_rescans_everything(tmp_path: Path) -> None:
    with spawn_daemon(tmp_path, {"echo": ECHO}, args=("--log-level", "debug")) as s:
        # Write behind the watcher's back is still picked up: SIGHUP rescans the folder.
        (s.folder / "later.yaml").write_text(ECHO.replace("v1", "later"))
        s.signal(signal.SIGHUP)

        def ok() -> bool:
            try:
                req = urllib.request.Request(s.url("/hooks/later"), data=b"x",
                                             headers={"Content-Type": "text/plain"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    return bool(r.read() == b"later x")
            except OSError:
                return False

        asyncio.run(wait_until(ok))
        asyncio.run(wait_until(lambda: "daemon_reloaded" in s.output()))
        s.signal(signal.SIGTERM)
        assert s.wait() == 0


async def test_an_edit_right_after_ready_is_not_lost(tmp_path: Path) -> None:
    """The watcher is live before the first load, so an edit made the moment the daemon
    reports ready (here: among 300 files) is applied."""
    files = {f"p{i:03d}": ECHO for i in range(300)}
    async with run_daemon(tmp_path, files) as d:
        d.path("p000").write_text(ECHO.replace("v1", "v2"))
        await wait_until(lambda: d.daemon.catalog.entries["p000"].version == 2, timeout=10)
        assert await text(d, "/hooks/p000") == (200, "v2 x")
