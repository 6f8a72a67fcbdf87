"""Shared helpers for harkd's benchmarks: statistics, a load generator, processes, RSS,
and the report.

Every figure the suite prints is a :class:`Figure`: an absolute value (median over
repeats, with min and max), a baseline measured in the same run, and their ratio. The
machine's core count goes into every report, because the numbers mean little without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEERS = HERE / ".venv-peers"
#: the interpreter that runs harkd: $HARKD_BENCH_PYTHON, the repo's .venv, or this one
HARKD_PY = Path(os.environ.get("HARKD_BENCH_PYTHON") or (
    ROOT / ".venv" / "bin" / "python" if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable))
HELLO = "Hello, {{ input.name | default('world') }}!"


# -- the machine -----------------------------------------------------------------------

def cores() -> int:
    return os.cpu_count() or 1


def machine() -> str:
    load = os.getloadavg()
    return (f"{cores()} cores, load average {load[0]:.2f} at start, "
            f"Python {sys.version.split()[0]}")


def pinned(cpu: int | None) -> list[str]:
    """A ``taskset`` prefix that pins a command to one CPU (nothing if unavailable)."""
    if cpu is None or cores() < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


# -- statistics ------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements with their min and max."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        xs = [v for v in values if v == v]  # drop NaN
        if not xs:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))

    def text(self, unit: str = "", digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        med = _fmt(self.median, digits)
        if self.n == 1:
            return f"{med}{unit}"
        return f"{med}{unit} ({_fmt(self.low, digits)}-{_fmt(self.high, digits)})"


def _fmt(x: float, digits: int) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


# -- load generation -------------------------------------------------------------------

@dataclass
class Load:
    """The outcome of one load run."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    tool: str = "aiohttp"
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


async def load(url: str, concurrency: int, *, count: int | None = None,
               duration: float | None = None, method: str = "POST",
               json_body: Any = None, headers: dict[str, str] | None = None,
               check: Callable[[int, bytes], bool] | None = None) -> Load:
    """``concurrency`` clients sending requests back to back, each over its own
    keep-alive connection and cookie jar (as separate users would), until ``count``
    requests are done or ``duration`` seconds have passed."""
    import aiohttp

    if count is None and duration is None:
        raise ValueError("give count or duration")
    ok = check or (lambda status, _body: status < 400)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    body = json.dumps(json_body).encode() if json_body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})} if body else headers
    timeout = aiohttp.ClientTimeout(total=60)
    t0 = time.perf_counter()
    deadline = t0 + duration if duration is not None else None

    async def client() -> None:
        nonlocal errors, sent
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            while True:
                if count is not None and sent >= count:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                sent += 1
                s = time.perf_counter()
                status = 0
                try:
                    async with http.request(method, url, data=body, headers=hdrs) as resp:
                        data = await resp.read()
                        status = resp.status
                        good = ok(resp.status, data)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    good = False
                lat.append((time.perf_counter() - s) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if not good:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    return Load(len(lat), errors, seconds, lat, percentile(lat, 50), percentile(lat, 99),
                statuses=statuses)


_WRK_LUA = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
             + summary.errors.status + summary.errors.timeout
  io.write(string.format('WRKJSON {{"requests": %d, "errors": %d, "us": %d, '
    .. '"p50": %d, "p99": %d}}\\n', summary.requests, errs, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, concurrency: int, duration: float, *, method: str = "POST",
        json_body: Any = None, headers: dict[str, str] | None = None,
        cpu: int | None = None) -> Load:
    """Drive ``url`` with ``wrk`` (C, one thread) for ``duration`` seconds. wrk is used for
    throughput because a Python client on one core saturates before a fast server does."""
    body = json.dumps(json.dumps(json_body)) if json_body is not None else "nil"
    extra = "\n".join(f'wrk.headers[{json.dumps(k)}] = {json.dumps(v)}'
                      for k, v in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA.format(method=method, body=body, headers=extra))
        script = f.name
    try:
        cmd = [*pinned(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
               "--timeout", "10s", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(script)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[8:])
            return Load(d["requests"], d["errors"], d["us"] / 1e6, [], d["p50"] / 1000,
                        d["p99"] / 1000, tool="wrk")
    raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")


# -- processes -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass
class Server:
    """A child process we started, with the time it took to answer its ready URL."""

    proc: subprocess.Popen[bytes]
    base: str
    ready_s: float
    log: Path
    #: CPU seconds (user + system, the process tree) it used until ready: less noisy than
    #: ``ready_s`` on a shared machine
    ready_cpu_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return self.base + path

    def rss_mb(self) -> float:
        return tree_rss_mb(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def serve(cmd: Sequence[str], port: int, ready_path: str, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, timeout: float = 60.0, cpu: int | None = None,
          ready: Callable[[int | None], bool] = lambda s: s == 200) -> Iterator[Server]:
    """Start ``cmd`` in its own session, time it until ``GET ready_path`` says ready, and
    stop it (its process group, which only it and its children are in) afterwards."""
    log = Path(tempfile.mkstemp(prefix="bench-", suffix=".log")[1])
    base = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*pinned(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                env=full_env, cwd=cwd, start_new_session=True)
    try:
        while True:
            if ready(http_status(base + ready_path, timeout=2)):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{cmd[0]} not ready in {timeout}s:\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.005)
        server = Server(proc, base, time.perf_counter() - t0, log,
                        tree_cpu_s(proc.pid))
        yield server
    finally:
        stop(proc)
        log.unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of one process (VmRSS from /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for k in kids:
                out.append(int(k))
                out.extend(children(int(k)))
    except OSError:
        pass
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    return cpu_s(pid) + sum(cpu_s(c) for c in children(pid))


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (servers that fork workers)."""
    return rss_mb(pid) + sum(rss_mb(c) for c in children(pid))


def timed_run(cmd: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, timeout: float = 120) -> Run:
    """Run a command to completion, timing it by the clock and by CPU used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                         env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, out.returncode, out.stdout + out.stderr)


@dataclass(frozen=True)
class Run:
    """A finished command: wall seconds, CPU seconds (its children included), exit code,
    stdout and stderr."""

    seconds: float
    cpu: float
    code: int
    output: str


def write_pipelines(folder: Path, n: int, template: str = HELLO, *,
                    distinct: bool = False) -> None:
    """``n`` one-step template webhooks ``p0`` … ``p{n-1}`` at ``/hooks/pN``; with
    ``distinct``, each file's bytes differ (a ``description``), so that nothing a loader
    keeps by content serves one file for another."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        extra = f"description: pipeline {i}\n" if distinct else ""
        (folder / f"p{i}.yaml").write_text(extra + pipeline_text(template))


def pipeline_text(template: str) -> str:
    return f"trigger: {{http: {{}}}}\nsteps:\n  - template: {json.dumps(template)}\n"


def harkd_cmd(folder: Path, port: int, *extra: str) -> list[str]:
    return [str(HARKD_PY), "-m", "harkd", "run", "--pipelines", str(folder),
            "--listen", f"127.0.0.1:{port}", *extra]


def harkd_env(state: Path) -> dict[str, str]:
    return {"HARKD_STATE": str(state), "HARKD_CONFIG": "", "PYTHONDONTWRITEBYTECODE": ""}


def peer_python(name: str) -> Path | None:
    """The interpreter of a peer's venv, if setup_peers.sh installed it."""
    py = PEERS / name / "bin" / "python"
    return py if py.exists() and (PEERS / name / ".ok").exists() else None


# -- the report ------------------------------------------------------------------------

@dataclass
class Figure:
    """One row of the report: a value against a baseline measured in the same run."""

    section: str
    name: str
    value: Spread
    unit: str
    baseline_name: str = ""
    baseline: Spread | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""
    digits: int = 1

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median or self.value.n == 0:
            return None
        return self.value.median / self.baseline.median

    def row(self) -> str:
        base = (f"{self.baseline_name}: {self.baseline.text(self.unit, self.digits)}"
                if self.baseline is not None else self.baseline_name or "-")
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        met = {True: "✅ " , False: "❌ ", None: ""}[self.met]
        goal = f"{met}{self.goal}".strip() or "-"
        note = f" {self.note}" if self.note else ""
        return (f"| {self.name} | {self.value.text(self.unit, self.digits)} | {base} | "
                f"{ratio} | {goal}{note} |")


@dataclass
class Report:
    """Figures and notes, printed as they come and written as Markdown and JSON."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print(f"  {fig.section} | {fig.row()}", flush=True)
        return fig

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def markdown(self, header: str = "") -> str:
        lines = [f"# {self.title}", "", header or machine(), ""]
        sections: dict[str, list[Figure]] = {}
        for f in self.figures:
            sections.setdefault(f.section, []).append(f)
        for section, figs in sections.items():
            lines += [f"## {section}", "",
                      "| figure | median (min-max) | baseline, same run | ratio | goal |",
                      "|---|---|---|---|---|"]
            lines += [f.row() for f in figs]
            lines.append("")
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        for p in self.plots:
            lines += [f"![{Path(p).stem}]({Path(p).name})", ""]
        took = time.time() - self.started
        lines.append(f"_Suite took {took:.0f} s._")
        return "\n".join(lines) + "\n"

    def write(self, path: Path, header: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(self.markdown(header))
        tmp.replace(path)
        data = [{**asdict(f), "ratio": f.ratio} for f in self.figures]
        path.with_suffix(".json").write_text(json.dumps(
            {"machine": machine(), "cores": cores(), "figures": data, "notes": self.notes},
            indent=1, default=str))
