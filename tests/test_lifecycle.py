"""Structured concurrency: parts that fail at start are reported and leave no task behind;
parts that fail later are logged and contained; a stopped daemon leaves no task running."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from harkd.core.registry import TriggerKind
from harkd.daemon import EX_SOFTWARE, Daemon, StartupError
from harkd.errors import first_error
from harkd.settings import Settings
from harkd.testing import capture_logs, free_port, registered, run_daemon, wait_until

pytestmark = pytest.mark.anyio


class Flaky:
    """A long-lived trigger that fails when its parameters say so: before ``started()``
    (``fail: start``), some time after it (``fail: later``), or never."""

    kind = "flaky"
    routes: tuple[str, ...] = ()

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def describe(self) -> dict[str, Any]:
        return {"kind": "flaky", "fail": self.fail}

    async def handle(self, request: Any, bound: Any) -> Any:
        raise NotImplementedError

    async def serve(self, bound: Any, started: Callable[[], None]) -> None:
        if self.fail == "start":
            raise OSError("device busy")
        started()
        if self.fail == "later":
            await asyncio.sleep(0.05)
            raise ConnectionResetError("the device went away")
        await asyncio.sleep(3600)


FLAKY = TriggerKind("flaky", "Test only: a trigger that fails on demand.",
                    {"type": "object", "properties": {"fail": {"enum": ["start", "later",
                                                                        "never"]}}},
                    lambda params, b: Flaky(params.get("fail", "never")))


@pytest.fixture
def flaky_trigger() -> Iterator[None]:
    with registered(FLAKY):
        yield


def harkd_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if "harkd" in repr(t.get_coro())}


async def state_of(d: Any, name: str) -> dict[str, Any]:
    async with d.http.get(d.url(f"/api/pipelines/{name}")) as r:
        body: dict[str, Any] = await r.json()
        return body


class RouteOnly(Flaky):
    """A trigger with nothing long-lived (``route_only``): its ``serve`` reports started,
    fails (``fail: start``) or returns without starting (``fail: silent``)."""

    kind = "routeonly"
    route_only = True

    async def serve(self, bound: Any, started: Callable[[], None]) -> None:
        if self.fail == "start":
            raise OSError("port taken")
        if self.fail != "silent":
            started()


ROUTE_ONLY = TriggerKind("routeonly", "Test only: a route-only trigger.",
                         {"type": "object", "properties": {"fail": {"enum": [
                             "start", "silent", "never"]}}},
                         lambda params, b: RouteOnly(params.get("fail", "never")))


async def test_a_route_only_trigger_is_bound_without_a_task(tmp_path: Path) -> None:
    hook = "trigger: {http: {}}\nsteps: [{template: ok}]\n"
    with registered(ROUTE_ONLY):
        async with run_daemon(tmp_path, {"hook": hook}) as d:
            await d.write("quiet", "trigger: {routeonly: {}}\nsteps: [{template: x}]\n")
            assert (await state_of(d, "quiet"))["state"] == "active"
            entries = d.daemon.catalog.entries
            assert entries["quiet"].task is None and entries["hook"].task is None
            await d.write("broken", "trigger: {routeonly: {fail: start}}\n"
                                    "steps: [{template: x}]\n")
            info = await state_of(d, "broken")
            assert info["state"] == "rejected"
            assert "cannot bind trigger: OSError: port taken" in info["errors"][0]["message"]
            await d.write("silent", "trigger: {routeonly: {fail: silent}}\n"
                                    "steps: [{template: x}]\n")
            info = await state_of(d, "silent")
            assert info["state"] == "rejected"
            assert "the trigger ended without starting" in info["errors"][0]["message"]
            async with d.http.post(d.url("/hooks/hook"), json={}) as r:
                assert (r.status, await r.text()) == (200, "ok")


@pytest.mark.usefixtures("flaky_trigger")
async def test_a_trigger_failing_at_start_is_rejected_and_leaves_no_task(
        tmp_path: Path) -> None:
    steady = "trigger: {flaky: {fail: never}}\nsteps: [{template: x}]\n"
    hook = "trigger: {http: {}}\nsteps: [{template: ok}]\n"
    async with run_daemon(tmp_path, {"steady": steady, "hook": hook}) as d:
        before = harkd_tasks()
        await d.write("broken", "trigger: {flaky: {fail: start}}\nsteps: [{template: x}]\n")
        info = await state_of(d, "broken")
        assert info["state"] == "rejected"
        assert "cannot bind trigger: OSError: device busy" in info["errors"][0]["message"]
        assert harkd_tasks() == before
        with capture_logs() as logs:
            await d.write("later", "trigger: {flaky: {fail: later}}\nsteps: [{template: x}]\n")
            await wait_until(lambda: any(e["event"] == "trigger_failed" for e in logs))
        failed = next(e for e in logs if e["event"] == "trigger_failed")
        assert failed["pipeline"] == "later" and "went away" in failed["error"]
        assert harkd_tasks() == before  # the failed trigger's task ended, nothing else did
        async with d.http.post(d.url("/hooks/hook"), json={}) as r:
            assert (r.status, await r.text()) == (200, "ok")
        assert (await state_of(d, "steady"))["state"] == "active"
    assert not harkd_tasks()


async def test_a_daemon_component_failing_at_start_or_later_is_reported(
        tmp_path: Path) -> None:
    daemon = Daemon(Settings(listen=f"127.0.0.1:{free_port()}", pipelines=tmp_path / "p",
                             state=tmp_path / "s"))

    async def broken(ready: Callable[[], None]) -> None:
        raise PermissionError("no inotify watches left")

    async def dies(ready: Callable[[], None]) -> None:
        ready()
        await asyncio.sleep(0.01)
        raise RuntimeError("lost its socket")

    before = harkd_tasks()
    with pytest.raises(StartupError, match="broken failed to start: PermissionError: no "
                                           "inotify watches left") as info:
        try:
            async with anyio.create_task_group() as group:
                await daemon._component(group, "broken", broken)
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None
    assert info.value.exit_code == EX_SOFTWARE
    assert harkd_tasks() == before

    with capture_logs() as logs:
        async with anyio.create_task_group() as group:
            await daemon._component(group, "dies", dies)
            await daemon.stop_event.wait()
    assert daemon.exit_code == EX_SOFTWARE
    assert any(e["event"] == "component_failed" and e["component"] == "dies" for e in logs)
    assert harkd_tasks() == before


async def test_a_daemon_in_the_tests_loop_leaves_its_signals_alone(tmp_path: Path) -> None:
    # run_daemon runs the daemon in pytest's loop: a Ctrl-C must still stop pytest, and a
    # second one must not reach the daemon's exit-at-once handler.
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP)}
    async with run_daemon(tmp_path) as d:
        assert d.daemon.ready
        assert {sig: signal.getsignal(sig) for sig in before} == before
    assert {sig: signal.getsignal(sig) for sig in before} == before
