"""The SQLite run log: what it records, redaction and truncation, retention, interrupted
runs, and survival of ``kill -9``."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harkd.core.pipeline import Pipeline
from harkd.core.run import Run, RunResult, StepRecord
from harkd.runlog import FILE, Limits, RunLog
from harkd.secrets import REDACTOR
from harkd.testing import run_daemon, spawn_daemon

pytestmark = pytest.mark.anyio

ECHO = "trigger: {http: {}}\nsteps:\n  - template: '{{ input }}'\n    as: said\n"


class _Trigger:
    kind = "http"
    routes = ("/x",)


def _run(run_id: str, data: Any = None, pipeline: str = "p") -> Run:
    p = Pipeline(name=pipeline, file=f"{pipeline}.yaml", trigger=_Trigger(),  # type: ignore[arg-type]
                 steps=())
    run = Run(id=run_id, pipeline=p, services=None, input=data,  # type: ignore[arg-type]
              trigger={"kind": "http"})
    run.steps.append(StepRecord(0, "llm", "answer", time.time(), 0.25,
                                detail={"deployment": "openai/x", "tokens": 12,
                                        "fallbacks": ["ollama/y: timeout"]}))
    return run


def _log(tmp_path: Path, **limits: Any) -> RunLog:
    return RunLog.open(tmp_path / "runs", Limits(**limits))


def test_records_a_run_with_steps_and_llm_details(tmp_path: Path) -> None:
    log = _log(tmp_path)
    try:
        run = _run("r1", {"q": "hi"})
        log.run_started(run)
        log.flush_sync()
        running = log.get_sync("r1")
        assert running is not None and running["status"] == "running"
        assert running["error"] is None and running["output"] is None
        log.run_finished(run, RunResult("r1", "ok", output={"a": 1}, duration=0.5))
        log.flush_sync()
        rec = log.get_sync("r1")
        assert rec is not None and rec["error"] is None
        assert rec["status"] == "ok" and rec["input"] == {"q": "hi"} and rec["output"] == {"a": 1}
        assert rec["duration_ms"] == 500.0 and rec["trigger"] == "http"
        assert rec["steps"][0]["duration_ms"] == 250.0 and rec["steps"][0]["name"] == "answer"
        assert rec["llm"] == [{"deployment": "openai/x", "tokens": 12,
                               "fallbacks": ["ollama/y: timeout"], "step": 0, "path": "0"}]
    finally:
        log.close()


def test_secrets_are_redacted_and_big_values_truncated(tmp_path: Path) -> None:
    REDACTOR.add("hunter2-very-secret-value")
    log = _log(tmp_path, max_field=100)
    try:
        run = _run("r2", {"token": "hunter2-very-secret-value", "pad": "x" * 500})
        log.run_started(run)
        log.run_finished(run, RunResult("r2", "error", error="bad hunter2-very-secret-value",
                                        http_status=500))
        log.flush_sync()
        rec = log.get_sync("r2")
        assert rec is not None and rec["truncated"] is True
        assert isinstance(rec["input"], str) and len(rec["input"]) < 130
        assert "hunter2" not in json.dumps(rec) and "***" in rec["input"]
        assert rec["error"] == "bad ***"
    finally:
        log.close()
    raw = (tmp_path / "runs" / FILE).read_bytes()
    assert b"hunter2" not in raw


def test_values_the_fast_encoder_leaves_out_are_stored_as_before(tmp_path: Path) -> None:
    """orjson refuses integers past 64 bits and writes dataclasses its own way: the run log
    stores them as the standard library's encoder with ``jsonable`` did."""
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int

    log = _log(tmp_path)
    try:
        run = _run("r3", {"big": 2**70, "raw": b"abc", "tags": ("a", "b"), "at": Point(1)})
        log.run_started(run)
        log.run_finished(run, RunResult("r3", "ok", output={"n": [2**65, 1.5]}))
        log.flush_sync()
        rec = log.get_sync("r3")
        assert rec is not None
        assert rec["input"] == {"big": 2**70, "raw": {"type": "bytes", "size": 3},
                                "tags": ["a", "b"], "at": "test_values_the_fast_encoder_"
                                "leaves_out_are_stored_as_before.<locals>.Point(x=1)"}
        assert rec["output"] == {"n": [2**65, 1.5]}
    finally:
        log.close()


def test_a_value_that_is_not_json_is_recorded_and_the_log_goes_on(tmp_path: Path) -> None:
    log = _log(tmp_path)
    try:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        run = _run("r4", {"q": 1})
        log.run_started(run)
        log.run_finished(run, RunResult("r4", "ok", output=loop))
        log.flush_sync()
        rec = log.get_sync("r4")
        assert rec is not None and rec["input"] == {"q": 1}
        assert rec["output"].startswith("<not JSON: ValueError: Circular reference")
        after = _run("r5")
        log.run_started(after)
        log.run_finished(after, RunResult("r5", "ok", output="fine"))
        log.flush_sync()
        assert log.get_sync("r5")["output"] == "fine"  # type: ignore[index]
    finally:
        log.close()


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    log = _log(tmp_path, keep=10, max_age=3600)
    try:
        for i in range(30):
            run = _run(f"n{i}")
            if i < 5:
                run.started = time.time() - 7200  # older than max_age
            log.run_started(run)
            log.run_finished(run, RunResult(run.id, "ok"))
        log.sweep()
        ids = [r["id"] for r in log.query_sync(limit=100)]
        assert ids == [f"n{i}" for i in range(29, 19, -1)]
        old = _log(tmp_path / "b", keep=100, max_age=3600)
        for i in range(6):
            run = _run(f"o{i}")
            run.started = time.time() - (7200 if i % 2 else 0)
            old.run_started(run)
            old.run_finished(run, RunResult(run.id, "ok"))
        old.sweep()
        assert sorted(r["id"] for r in old.query_sync()) == ["o0", "o2", "o4"]
        old.close()
    finally:
        log.close()


def test_a_batch_of_many_runs_is_written_whole_and_in_order(tmp_path: Path) -> None:
    """More runs in one batch than one INSERT statement holds, some still running when
    it is written and ending in a later one."""
    from harkd.runlog import INSERT_ROWS

    n = INSERT_ROWS * 2 + 7
    log = _log(tmp_path)
    try:
        runs = [_run(f"m{i:03d}", {"i": i}) for i in range(n)]
        for i, run in enumerate(runs):
            log.run_started(run)
            if i % 10:
                log.run_finished(run, RunResult(run.id, "ok", output=f"out {i}"))
        log.flush_sync()
        running = {r["id"] for r in log.query_sync(status="running", limit=500)}
        assert running == {run.id for run in runs[::10]}
        for run in runs[::10]:
            log.run_finished(run, RunResult(run.id, "error", error="late", http_status=500))
        log.flush_sync()
        rows = log.query_sync(limit=500)
        assert [r["id"] for r in rows] == [f"m{i:03d}" for i in range(n - 1, -1, -1)]
        assert [r["status"] for r in rows[::-1]] == ["ok" if i % 10 else "error"
                                                     for i in range(n)]
        got = log.get_sync("m077")
        assert got is not None and (got["input"], got["output"]) == ({"i": 77}, "out 77")
        assert log.get_sync("m070")["error"] == "late"  # type: ignore[index]
        db = sqlite3.connect(tmp_path / "runs" / FILE)
        try:  # no error is stored as NULL, not ""
            assert db.execute("SELECT count(*) FROM runs WHERE error IS NULL").fetchone() \
                == (n - len(runs[::10]),)
        finally:
            db.close()
    finally:
        log.close()


def test_filters_and_pagination(tmp_path: Path) -> None:
    log = _log(tmp_path)
    try:
        for i in range(7):
            run = _run(f"f{i}", pipeline="a" if i % 2 else "b")
            log.run_started(run)
            log.run_finished(run, RunResult(run.id, "ok" if i < 4 else "error"))
        log.flush_sync()
        assert [r["id"] for r in log.query_sync(pipeline="a")] == ["f5", "f3", "f1"]
        assert [r["id"] for r in log.query_sync(status="error")] == ["f6", "f5", "f4"]
        first = log.query_sync(limit=3)
        second = log.query_sync(limit=3, before=first[-1]["seq"])
        assert [r["id"] for r in first + second] == ["f6", "f5", "f4", "f3", "f2", "f1"]
    finally:
        log.close()


def test_a_log_made_with_the_old_indexes_opens_without_them(tmp_path: Path) -> None:
    """Logs written before the status and start-time indexes were dropped lose them when
    opened, keep their rows, and still answer every filter (and mark their runs left
    running as interrupted)."""
    from harkd.runlog import SCHEMA

    folder = tmp_path / "runs"
    folder.mkdir()
    db = sqlite3.connect(folder / FILE)
    table = SCHEMA[SCHEMA.index("CREATE TABLE"):SCHEMA.index(");") + 2]
    db.executescript(table + """
        CREATE INDEX runs_pipeline ON runs (pipeline, seq);
        CREATE INDEX runs_status ON runs (status, seq);
        CREATE INDEX runs_started ON runs (started);
    """)
    with db:
        db.executemany("INSERT INTO runs (id, pipeline, version, started, status) "
                       "VALUES (?, ?, 1, ?, ?)",
                       [(f"old{i}", "a" if i % 2 else "b", 1000.0 + i,
                         "running" if i == 3 else "ok" if i < 4 else "error")
                        for i in range(6)])
    db.close()
    log = _log(tmp_path)
    try:
        check = sqlite3.connect(folder / FILE)
        names = {r[0] for r in check.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'runs_%'")}
        check.close()
        assert names == {"runs_pipeline", "runs_running"}
        assert [r["id"] for r in log.query_sync()] == [f"old{i}" for i in range(5, -1, -1)]
        assert [r["id"] for r in log.query_sync(status="error")] == ["old5", "old4"]
        assert [r["id"] for r in log.query_sync(pipeline="a", status="ok")] == ["old1"]
        assert [r["id"] for r in log.query_sync(since=1001.0, until=1003.0)] == ["old2", "old1"]
        assert log.get_sync("old3")["status"] == "interrupted"  # type: ignore[index]
        assert log.query_sync(status="running") == []
        run = _run("new")
        log.run_started(run)
        log.flush_sync()
        assert [r["id"] for r in log.query_sync(status="running")] == ["new"]
    finally:
        log.close()


def test_runs_left_running_by_a_crash_are_marked_interrupted(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.run_started(_run("lost"))
    log.flush_sync()
    log._queue.put(("stop",))  # stop the writer without finishing the run (a crash)
    assert log._thread is not None
    log._thread.join()
    again = _log(tmp_path)
    try:
        rec = again.get_sync("lost")
        assert rec is not None and rec["status"] == "interrupted"
    finally:
        again.close()


async def test_daemon_logs_webhook_runs_and_api_reads_them(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        async with d.http.post(d.url("/hooks/echo"), json={"n": 1}) as r:
            run_id = r.headers["X-Harkd-Run-Id"]
        async with d.http.get(d.url(f"/api/runs/{run_id}")) as r:
            rec = await r.json()
        assert rec["pipeline"] == "echo" and rec["status"] == "ok"
        assert rec["input"] == {"n": 1} and rec["steps"][0]["kind"] == "template"
        assert rec["trigger_data"]["method"] == "POST"
    assert (tmp_path / "state" / "runs" / FILE).is_file()


def _post(url: str, body: bytes) -> str:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["X-Harkd-Run-Id"])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_run_log_survives_kill_9(tmp_path: Path) -> None:
    with spawn_daemon(tmp_path, {"echo": ECHO}) as child:
        ids = [_post(child.url("/hooks/echo"), json.dumps({"i": i}).encode())
               for i in range(50)]
        page = _get(child.url("/api/runs?limit=100"))  # a read waits for the writer
        assert len(page["runs"]) == 50
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    db = sqlite3.connect(tmp_path / "state" / "runs" / FILE)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        got = {row[0]: row[1] for row in db.execute("SELECT id, status FROM runs")}
        assert set(got) == set(ids) and set(got.values()) == {"ok"}
    finally:
        db.close()
    # and a daemon starts on the same state again, with the old runs readable
    with spawn_daemon(tmp_path, {"echo": ECHO}) as child:
        _post(child.url("/hooks/echo"), b"{}")
        assert len(_get(child.url("/api/runs?limit=100"))["runs"]) == 51
