"""The run log: every run recorded in SQLite in the state folder, as a run observer.

The event loop never touches the disk: :meth:`RunLog.run_started` and
:meth:`RunLog.run_finished` put a small tuple on a queue, and one writer thread encodes,
redacts and truncates the values and writes whatever has queued up in one transaction.
The database is in WAL mode with ``synchronous=NORMAL``: a committed run survives
``kill -9`` of the daemon (not a power cut in the last instant), and a reader never waits
for the writer. A run that was in flight when the daemon died is marked ``interrupted``
the next time the log is opened.

Inputs and outputs are stored as JSON text, secrets redacted
(:data:`~harkd.secrets.REDACTOR`) and cut to ``runs.max_field`` characters. Retention
keeps the newest ``runs.keep`` runs and none older than ``runs.max_age``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HarkError
from .logs import get_logger
from .records import dataclass
from .runrecord import encode, ended, record, summary

if TYPE_CHECKING:
    from .core.run import Run, RunResult
    from .settings import Settings

log = get_logger("harkd.runlog")

FILE = "runs.sqlite3"
# Each B-tree a row enters costs its insert and, at retention, its delete. Filters by status
# or start time and retention's age cut scan by seq instead (the log holds runs.keep rows,
# 10,000 by default: a scan takes about 3 ms; a sweep comes every keep/4 writes). Only runs
# still ``running`` are indexed by status, for marking them ``interrupted`` at open: a
# partial index that a run written whole never enters. Logs made before have runs_status
# (status, seq) and runs_started (started); opening one drops them, keeping its rows.
# (Without those two a webhook request costs the daemon 11.3k fewer instructions, 8.1k of
# them in the writer thread: bench/webhook_instructions.py, docs/performance-history.md.)
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    pipeline TEXT NOT NULL,
    version INTEGER NOT NULL,
    trigger_kind TEXT,
    trigger TEXT,
    started REAL NOT NULL,
    duration REAL,
    status TEXT NOT NULL,
    error TEXT,
    http_status INTEGER,
    input TEXT,
    output TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    steps TEXT
);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, seq);
CREATE INDEX IF NOT EXISTS runs_running ON runs (seq) WHERE status = 'running';
DROP INDEX IF EXISTS runs_status;
DROP INDEX IF EXISTS runs_started;
"""
COLUMNS = ("seq", "id", "pipeline", "version", "trigger_kind", "trigger", "started",
           "duration", "status", "error", "http_status", "input", "output", "truncated",
           "steps")
#: how long the writer lets records gather before it writes them (seconds)
BATCH_WINDOW = 0.05
#: how many writes between two retention sweeps, at least (a sweep's scan for the cut-off
#: costs the same however many rows it then deletes, so a long log sweeps every keep/4)
SWEEP_EVERY = 500
#: rows one INSERT statement writes, at most (15 parameters each: 960, under the 999 of
#: SQLite before 3.32)
INSERT_ROWS = 64
_INSERT = ("INSERT OR IGNORE INTO runs (id, pipeline, version, trigger_kind, trigger, started, "
           "input, truncated, status, duration, error, http_status, output, steps) VALUES ")
#: (an error of ``""`` is stored as NULL: see :func:`~harkd.runrecord.ended`)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ? | ?, ?, ?, NULLIF(?, ''), ?, ?, ?)"
_WIDTH = _ROW.count("?")
_INSERT_FULL = _INSERT + ", ".join([_ROW] * INSERT_ROWS)
_UPDATE = ("UPDATE runs SET truncated = truncated | ?, status = ?, duration = ?, "
           "error = NULLIF(?, ''), http_status = ?, output = ?, steps = ? WHERE id = ?")
#: the ending columns (:data:`~harkd.runrecord.ENDED`) of a row written before its run ends
_RUNNING = (0, "running", None, "", None, None, None)


@dataclass(frozen=True)
class Limits:
    """Retention and size caps of the run log."""

    keep: int = 10000
    max_age: float = 720 * 3600.0
    max_field: int = 8192


DEFAULT_LIMITS = Limits()


class RunLog:
    """The SQLite run log of one daemon; a :class:`~harkd.contracts.RunObserver`.

    Create it with :meth:`open`; :meth:`close` writes what is queued and stops the
    writer thread. Queries run in a worker thread on their own connection.
    """

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = path
        self.limits = limits
        #: in a cluster: this replica's id, added to every record read back
        self.replica: str | None = None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    @classmethod
    def open(cls, folder: Path, limits: Limits = DEFAULT_LIMITS) -> RunLog:
        """Open (or create) ``folder/runs.sqlite3``, mark runs a crash left ``running`` as
        ``interrupted``, and start the writer thread."""
        folder.mkdir(parents=True, exist_ok=True)
        runlog = cls(folder / FILE, limits)
        db = runlog._connect()
        with db:
            db.executescript(SCHEMA)
            n = db.execute("UPDATE runs SET status = 'interrupted', error = "
                           "'harkd stopped before the run finished' "
                           "WHERE status = 'running'").rowcount
        if n:
            log.warning("runlog_interrupted_runs", count=n)
        runlog._thread = threading.Thread(target=runlog._writer, args=(db,),
                                          name="harkd-runlog", daemon=True)
        runlog._thread.start()
        return runlog

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- the observer (event loop side: no I/O, no encoding) -------------------------

    def run_started(self, run: Run) -> None:
        self._queue.put(("start", run))

    def run_finished(self, run: Run, result: RunResult) -> None:
        self._queue.put(("finish", run, result))

    # -- the writer thread -----------------------------------------------------------

    def _writer(self, db: sqlite3.Connection) -> None:
        since_sweep = 0
        sweep_every = max(SWEEP_EVERY, self.limits.keep // 4)
        while True:
            items = [self._queue.get()]
            if items[0][0] in ("start", "finish"):
                # Let a batch gather: one transaction (and one GIL hand-over) for many runs.
                time.sleep(BATCH_WINDOW)
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # One pass sorts the batch (a webhook's run is two items of it).
            starts: list[Run] = []
            finished: dict[str, tuple[Run, RunResult]] = {}
            flushes: list[threading.Event] = []
            stop = sweep = False
            for item in items:
                kind = item[0]
                if kind == "start":
                    starts.append(item[1])
                elif kind == "finish":
                    finished[item[1].id] = (item[1], item[2])
                elif kind == "flush":
                    flushes.append(item[1])
                elif kind == "stop":
                    stop = True
                elif kind == "sweep":
                    sweep = True
            try:
                since_sweep += self._write(db, starts, finished)
                if since_sweep >= sweep_every or stop or sweep:
                    self._sweep(db)
                    since_sweep = 0
            except sqlite3.Error as exc:
                # The log must never take runs down with it: count, log and go on.
                self.dropped += len(items)
                log.error("runlog_write_failed", error=str(exc), records=len(items))
            for event in flushes:
                event.set()
            if stop:
                db.close()
                return

    def _write(self, db: sqlite3.Connection, starts: list[Run],
               finished: dict[str, tuple[Run, RunResult]]) -> int:
        limit = self.limits.max_field
        # The INSERTs' parameters, row after row (no list of row tuples to flatten).
        params: list[Any] = []
        for run in starts:
            text, cut = encode(run.input, limit)
            trigger, _ = encode(run.trigger, limit)
            params += (run.id, run.pipeline.name, run.pipeline.version,
                       run.trigger.get("kind"), trigger, run.started, text, int(cut))
            done = finished.pop(run.id, None)
            # A run that ended within the batch window is one row, written whole.
            params += ended(*done, limit) if done is not None else _RUNNING
        updates = [(*ended(run, result, limit), run.id) for run, result in finished.values()]
        if not params and not updates:
            return 0
        db.execute("BEGIN")
        try:
            # Up to INSERT_ROWS rows a statement: its binding, step and reset (and the GIL
            # let go around the step) are paid once for them all (bench/runlog_cost.py:
            # 26.6 -> 23.3-24.8 us per run). sqlite3 prepares each size of statement once
            # and keeps it (about 1M instructions for 64 rows).
            full = INSERT_ROWS * _WIDTH
            for i in range(0, len(params), full):
                part = params[i:i + full]
                db.execute(_INSERT_FULL if len(part) == full else
                           _INSERT + ", ".join([_ROW] * (len(part) // _WIDTH)), part)
            db.executemany(_UPDATE, updates)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.written += len(starts) + len(updates)
        return len(starts) + len(updates)

    def _sweep(self, db: sqlite3.Connection) -> None:
        cutoff = time.time() - self.limits.max_age
        with db:
            old = db.execute("DELETE FROM runs WHERE started < ? AND status != 'running'",
                             (cutoff,)).rowcount
            row = db.execute("SELECT seq FROM runs ORDER BY seq DESC LIMIT 1 OFFSET ?",
                             (self.limits.keep,)).fetchone()
            extra = db.execute("DELETE FROM runs WHERE seq <= ?", (row[0],)).rowcount \
                if row else 0
        if old or extra:
            log.debug("runlog_swept", by_age=old, by_count=extra)

    # -- control ---------------------------------------------------------------------

    def flush_sync(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far is written (tests, shutdown, queries)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout)

    async def flush(self) -> None:
        await asyncio.to_thread(self.flush_sync)

    def sweep(self) -> None:
        """Apply retention now (it also runs every few hundred writes)."""
        done = threading.Event()
        self._queue.put(("sweep",))
        self._queue.put(("flush", done))
        done.wait(10.0)

    def close(self) -> None:
        """Write what is queued, apply retention and stop the writer thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(("stop",))
            self._thread.join(30.0)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- queries ---------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._read_lock:
            if self._reader is None:
                self._reader = self._connect()
                self._reader.row_factory = sqlite3.Row
            return [dict(r) for r in self._reader.execute(sql, args).fetchall()]

    def query_sync(self, *, pipeline: str | None = None, status: str | None = None,
                   limit: int = 50, before: int | None = None, since: float | None = None,
                   until: float | None = None) -> list[dict[str, Any]]:
        """Runs newest first; ``before`` is the ``seq`` to continue after (pagination);
        ``since`` and ``until`` bound the start time (Unix seconds)."""
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (("pipeline = ?", pipeline), ("status = ?", status),
                              ("started >= ?", since), ("started < ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = ("SELECT seq, id, pipeline, version, trigger_kind, started, duration, status, "
               "error, http_status FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq DESC LIMIT ?")
        return [self._mark(summary(r)) for r in self._read(sql, (*args, limit))]

    def get_sync(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return self._mark(record(rows[0])) if rows else None

    def _mark(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.replica is not None:
            out["replica"] = self.replica
        return out

    async def query(self, **kw: Any) -> list[dict[str, Any]]:
        await self.flush()
        return await asyncio.to_thread(lambda: self.query_sync(**kw))

    async def get(self, run_id: str) -> dict[str, Any] | None:
        await self.flush()
        return await asyncio.to_thread(self.get_sync, run_id)


def limits(settings: Settings) -> Limits:
    """The retention limits from the daemon's settings."""
    return Limits(keep=int(getattr(settings, "runs_keep", Limits.keep)),
                  max_age=float(getattr(settings, "runs_max_age", Limits.max_age)),
                  max_field=int(getattr(settings, "runs_max_field", Limits.max_field)))


class RunLogError(HarkError, OSError):
    """The run log cannot be opened (unwritable state folder, a corrupt database).
    Raised by :func:`open_for`; the daemon refuses to start with it."""


def open_for(settings: Settings) -> RunLog:
    """Open the run log of a daemon in its state folder (``STATE/runs/runs.sqlite3``)."""
    from . import state

    try:
        return RunLog.open(state.subdir(settings, "runs"), limits(settings))
    except sqlite3.Error as exc:
        raise RunLogError(f"cannot open the run log in {settings.state}: {exc}") from None
