"""The cron trigger: schedules, time zones and DST, input, overlap policies, missed runs
across restarts (also after ``kill -9``), and errors with positions."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from harkd.testing import (
    DaemonHandle,
    capture_logs,
    run_daemon,
    serve_app,
    spawn_daemon,
    wait_until,
)
from harkd.triggers.schedule import Schedule, write_last

pytestmark = pytest.mark.anyio

EVERY_SECOND = "trigger:\n  cron:\n    schedule: '* * * * * *'\n"


async def _runs(d: DaemonHandle, name: str) -> list[dict[str, Any]]:
    async with d.http.get(d.url(f"/api/runs?pipeline={name}&limit=500")) as r:
        summaries = (await r.json())["runs"]
    out = []
    for s in summaries:
        async with d.http.get(d.url(f"/api/runs/{s['id']}")) as r:
            out.append(await r.json())
    return out[::-1]


# -- the schedule --------------------------------------------------------------------


def _at(y: int, mo: int, day: int, h: int, mi: int, tz: str) -> float:
    return dt.datetime(y, mo, day, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


def test_five_and_six_fields_and_macros() -> None:
    t0 = _at(2025, 1, 1, 12, 0, "UTC")
    assert Schedule("*/15 * * * *").next_after(t0) - t0 == 900
    assert Schedule("*/10 * * * * *").next_after(t0) - t0 == 10  # seconds come first
    assert Schedule("@hourly").next_after(t0) - t0 == 3600


def test_timezone_and_dst() -> None:
    berlin = Schedule("30 2 * * *", "Europe/Berlin")
    # spring forward: 02:30 does not exist on 2025-03-30; it fires right after the gap
    nxt = berlin.next_after(_at(2025, 3, 29, 12, 0, "Europe/Berlin"))
    assert berlin.local(nxt) == "2025-03-30T03:00:00+02:00"
    # fall back: 02:30 happens twice on 2025-10-26; a fixed-hour entry fires once
    t = _at(2025, 10, 25, 12, 0, "Europe/Berlin")
    fires = [berlin.local(t := berlin.next_after(t)) for _ in range(2)]
    assert fires == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]
    # while an entry with * in the hour field fires in both copies of the hour
    half = Schedule("*/30 * * * *", "Europe/Berlin")
    t = _at(2025, 10, 26, 1, 45, "Europe/Berlin")
    fires = [half.local(t := half.next_after(t)) for _ in range(4)]
    assert fires == ["2025-10-26T02:00:00+02:00", "2025-10-26T02:30:00+02:00",
                     "2025-10-26T02:00:00+01:00", "2025-10-26T02:30:00+01:00"]
    ny = Schedule("0 9 * * 1-5", "America/New_York")
    assert ny.local(ny.next_after(_at(2025, 6, 7, 0, 0, "UTC"))) == "2025-06-09T09:00:00-04:00"


# -- firing --------------------------------------------------------------------------


async def test_fires_with_static_and_templated_input(tmp_path: Path) -> None:
    static = EVERY_SECOND + "    input: {hello: world}\nsteps:\n  - template: '{{ input }}'\n"
    templ = (EVERY_SECOND + "    input: {at: '{{ trigger.scheduled }}'}\n"
             "steps:\n  - template: '{{ input.at }}'\n")
    async with run_daemon(tmp_path, {"static": static, "templ": templ}) as d:
        await wait_until(lambda: _count(d, "static") >= 2 and _count(d, "templ") >= 2)
        runs = await _runs(d, "static")
        assert runs[0]["input"] == {"hello": "world"} and runs[0]["trigger"] == "cron"
        runs = await _runs(d, "templ")
        assert [r["input"]["at"] for r in runs] == [r["trigger_data"]["scheduled"]
                                                   for r in runs]
        assert all(float(r["trigger_data"]["scheduled"]) % 1 == 0 for r in runs)
        pipelines = {p["name"]: p for p in (await (await d.http.get(
            d.url("/api/pipelines"))).json())["pipelines"]}
        nxt = dt.datetime.fromisoformat(pipelines["static"]["trigger"]["next_fire"])
        assert abs(nxt.timestamp() - time.time()) <= 1.5


def _count(d: DaemonHandle, name: str) -> int:
    """Runs of ``name`` that have ended, from the metrics' counter."""
    total = 0.0
    for metric in d.daemon.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "harkd_runs_total" and s.labels["pipeline"] == name:
                total += s.value
    return int(total)


@asynccontextmanager
async def _held() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A scripted upstream whose answers wait until the test releases them."""
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    async with serve_app({"/hold": hold}) as base:
        yield base + "/hold", release


def _slow(url: str, overlap: str, extra: str = "") -> str:
    return (EVERY_SECOND + f"    overlap: {overlap}\n{extra}"
            f"concurrency: {{max: 16}}\nsteps:\n  - http: {{url: '{url}', timeout: 60}}\n")


async def test_overlap_skip(tmp_path: Path) -> None:
    async with _held() as (url, release), run_daemon(tmp_path, {"c": _slow(url, "skip")}) as d:
        with capture_logs() as logs:
            await wait_until(lambda: sum(e["event"] == "cron_skipped" for e in logs) >= 2)
        bound = d.daemon.catalog.bound("c")
        assert bound is not None and len(bound.inflight) == 1
        release.set()
        await wait_until(lambda: _count(d, "c") >= 2)


async def test_overlap_queue(tmp_path: Path) -> None:
    async with _held() as (url, release), run_daemon(
            tmp_path, {"c": _slow(url, "queue", "    queue: 2\n")}) as d:
        with capture_logs() as logs:
            await wait_until(lambda: any(e["event"] == "cron_skipped" and e["reason"] ==
                                         "queue full" for e in logs))
        bound = d.daemon.catalog.bound("c")
        assert bound is not None and len(bound.inflight) == 1
        release.set()
        await wait_until(lambda: _count(d, "c") >= 3)  # the held run, then the queued two


async def test_overlap_parallel(tmp_path: Path) -> None:
    async with _held() as (url, release), run_daemon(tmp_path,
                                                     {"c": _slow(url, "parallel")}) as d:
        bound = d.daemon.catalog.bound("c")
        assert bound is not None
        await wait_until(lambda: len(bound.inflight) >= 3)
        release.set()


# -- missed runs ---------------------------------------------------------------------

MINUTELY = "trigger:\n  cron: {{schedule: '* * * * *', catch_up: {policy}, grace: 5m}}\n" \
           "steps:\n  - template: x\n"


@pytest.mark.parametrize(("policy", "expected"), [("none", 0), ("latest", 1), ("all", 5)])
async def test_catch_up_after_downtime(tmp_path: Path, policy: str, expected: int) -> None:
    state = tmp_path / "state" / "cron" / "m.json"
    write_last(state, time.time() - 600, "* * * * *")  # harkd was down for ten minutes
    with capture_logs() as logs:
        async with run_daemon(tmp_path, {"m": MINUTELY.format(policy=policy)}) as d:
            await wait_until(lambda: any(e["event"] == "cron_started" for e in logs))
            await wait_until(lambda: _count(d, "m") >= expected)
            await asyncio.sleep(0.2)
            runs = await _runs(d, "m")
            assert len(runs) == expected
            assert all(r["trigger_data"]["catch_up"] for r in runs)
    missed = [e for e in logs if e["event"] == "cron_missed"]
    assert missed and missed[0]["missed"] == 10 and missed[0]["caught_up"] == expected
    last = json.loads(state.read_text())["last"]
    assert time.time() - last < 61  # the newest missed fire is recorded...
    with capture_logs() as logs:  # ...so a second start repeats nothing
        async with run_daemon(tmp_path, {"m": MINUTELY.format(policy=policy)}) as d:
            await wait_until(lambda: any(e["event"] == "cron_started" for e in logs))
            await asyncio.sleep(0.2)
            assert len(await _runs(d, "m")) == expected
    assert not [e for e in logs if e["event"] == "cron_missed"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_kill_9_and_restart_neither_repeats_nor_drops_a_fire(tmp_path: Path) -> None:
    every = ("trigger:\n  cron: {schedule: '* * * * * *', catch_up: all, grace: 1h}\n"
             "steps:\n  - template: x\n")
    with spawn_daemon(tmp_path, {"tick": every}) as child:
        deadline = time.monotonic() + 20
        while len(_get(child.url("/api/runs?limit=500"))["runs"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        child.signal(signal.SIGKILL)
        child.wait()
    time.sleep(2.5)  # fires are missed while it is down
    with spawn_daemon(tmp_path, {"tick": every}) as child:
        time.sleep(1.5)
        runs = _get(child.url("/api/runs?limit=500"))["runs"]
        scheduled = []
        for r in runs:
            rec = _get(child.url(f"/api/runs/{r['id']}"))
            scheduled.append(rec["trigger_data"]["scheduled"])
    scheduled.sort()
    assert len(scheduled) == len(set(scheduled)) >= 6
    assert all(b - a == 1.0 for a, b in itertools.pairwise(scheduled))


# -- errors --------------------------------------------------------------------------


async def test_bad_schedules_and_zones_are_rejected_with_positions(tmp_path: Path) -> None:
    files = {
        "fields": "trigger:\n  cron:\n    schedule: '* * *'\nsteps: [{template: x}]\n",
        "value": "trigger:\n  cron:\n    schedule: '61 * * * *'\nsteps: [{template: x}]\n",
        "zone": "trigger:\n  cron:\n    schedule: '@daily'\n    timezone: Mars/Olympus\n"
                "steps: [{template: x}]\n",
        "macro": "trigger:\n  cron:\n    schedule: '@sometimes'\nsteps: [{template: x}]\n",
        "policy": "trigger:\n  cron:\n    schedule: '@daily'\n    overlap: maybe\n"
                  "steps: [{template: x}]\n",
    }
    async with run_daemon(tmp_path, files) as d:
        errors = {n: d.daemon.catalog.entries[n].errors[0] for n in files}
        assert all(d.state(n) == "rejected" for n in files)
        assert errors["fields"].pointer == "/trigger/cron/schedule"
        assert errors["value"].pointer == "/trigger/cron/schedule"
        assert "invalid cron expression" in errors["value"].message
        assert (errors["value"].line, errors["value"].column) == (3, 15)
        assert errors["zone"].pointer == "/trigger/cron/timezone" and errors["zone"].line == 4
        assert "Mars/Olympus" in errors["zone"].message
        assert "@sometimes" in errors["macro"].message
        assert errors["policy"].pointer == "/trigger/cron/overlap"
