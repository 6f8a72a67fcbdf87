"""harkd's own figures (issue 2): reload latency, webhook throughput on one core, cold
start, ``harkd check``, idle memory. Each against a baseline measured in the same run.

    python bench/core.py            # the full set (about 2 minutes)
    python bench/core.py --quick    # fewer repeats
    python bench/core.py --smoke    # tiny counts: checks the harness, not the numbers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HARKD_PY,
    HERE,
    RESULTS,
    Figure,
    Report,
    Spread,
    free_port,
    harkd_cmd,
    harkd_env,
    have_wrk,
    load,
    percentile,
    pipeline_text,
    serve,
    timed_run,
    tree_cpu_s,
    write_pipelines,
    wrk,
)
from harkd_probe import HEAVY

SECTION_RELOAD = "Reload latency (write → new version answers)"
SECTION_HOOK = "Webhook throughput, server pinned to one core"
SECTION_START = "Start-up, check and memory (100 pipelines)"
#: What a benchmark pipeline sets so that 100 concurrent clients are not refused with 429
#: (the default is 32 parallel runs per pipeline).
WIDE = "concurrency: {max: 1024, mode: parallel}\n"


@dataclass(frozen=True)
class Scale:
    """How much work each figure does."""

    edits: int = 40
    reload_sizes: tuple[int, ...] = (1, 100, 1000)
    repeats: int = 3
    seconds: float = 5.0
    concurrency: int = 32

    @classmethod
    def named(cls, name: str) -> Scale:
        if name == "smoke":
            return cls(edits=3, reload_sizes=(1, 5), repeats=1, seconds=1.0, concurrency=4)
        if name == "quick":
            return cls(edits=30, reload_sizes=(1, 100), repeats=1, seconds=2.0)
        return cls()


# -- reload ----------------------------------------------------------------------------

async def _watchfiles_baseline(edits: int) -> list[float]:
    """Write → ``watchfiles.awatch`` yields, with harkd's step (15 ms): the notification
    harkd waits for before it can do anything."""
    import watchfiles

    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        target = folder / "p.yaml"
        target.write_text("x")
        stop = asyncio.Event()
        got: asyncio.Queue[float] = asyncio.Queue()

        async def watch() -> None:
            async for _ in watchfiles.awatch(folder, debounce=400, step=15, recursive=False,
                                             stop_event=stop, watch_filter=None):
                got.put_nowait(time.perf_counter())

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        for i in range(edits):
            t0 = time.perf_counter()
            target.write_text(pipeline_text(f"v{i}"))
            t1 = await asyncio.wait_for(got.get(), 5)
            lat.append((t1 - t0) * 1000)
            await asyncio.sleep(0.08)
        stop.set()
        await task
    return lat


async def _reload_edits(base: str, folder: Path, n: int, edits: int) -> tuple[list[float], int]:
    """Edit ``edits`` files (round robin over the first 20) and time each until the new
    version answers. Returns the latencies and the number of edits that never showed."""
    lat: list[float] = []
    missed = 0
    async with aiohttp.ClientSession() as http:
        for i in range(edits):
            name = f"p{i % min(n, 20)}"
            marker = f"edit-{i}-{time.monotonic_ns()}"
            t0 = time.perf_counter()
            (folder / f"{name}.yaml").write_text(pipeline_text(marker))
            deadline = t0 + 5
            while True:
                async with http.post(f"{base}/hooks/{name}", json={}) as resp:
                    body = await resp.text()
                now = time.perf_counter()
                if body == marker:
                    lat.append((now - t0) * 1000)
                    break
                if now > deadline:
                    missed += 1
                    print(f"    missed edit {i} of {name} with {n} loaded: still answers "
                          f"{body[:80]!r} after 5 s", flush=True)
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.08 + (i % 3) * 0.02)
    return lat, missed


def reload_latency(report: Report, scale: Scale) -> dict[int, list[float]]:
    base = asyncio.run(_watchfiles_baseline(scale.edits))
    base_p50, base_p95 = Spread.of([percentile(base, 50)]), Spread.of([percentile(base, 95)])
    out: dict[int, list[float]] = {}
    for n in scale.reload_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            folder = root / "pipelines"
            write_pipelines(folder, n)
            port = free_port()
            with serve(harkd_cmd(folder, port), port, "/readyz", env=harkd_env(root / "state"),
                       timeout=120) as srv:
                lat, missed = asyncio.run(_reload_edits(srv.base, folder, n, scale.edits))
        out[n] = lat
        p95 = percentile(lat, 95)
        note = f"{len(lat)} edits" + (f", {missed} never showed within 5 s" if missed else "")
        report.add(Figure(SECTION_RELOAD, f"p50, 1 of {n:,} pipelines",
                          Spread.of([percentile(lat, 50)]), " ms",
                          "watchfiles notify p50", base_p50, note=note))
        report.add(Figure(SECTION_RELOAD, f"p95, 1 of {n:,} pipelines", Spread.of([p95]),
                          " ms", "watchfiles notify p95", base_p95, goal="≤ watchfiles + 20 ms",
                          met=p95 <= base_p95.median + 20 and not missed, note=note))
    return out


# -- webhook throughput ----------------------------------------------------------------

def _throughput(url: str, scale: Scale, pid: int) -> tuple[float, float, float]:
    """Requests/s, p99 (ms) and server CPU per request (µs) of one run, the server
    already pinned to CPU 1. CPU per request is the steadier figure on a shared machine:
    other processes on the core lower req/s but not (much) the work each request takes."""
    body = {"name": "bench"}
    cpu0 = tree_cpu_s(pid)
    if have_wrk():
        r = wrk(url, scale.concurrency, scale.seconds, json_body=body, cpu=0)
    else:
        r = asyncio.run(load(url, scale.concurrency, duration=scale.seconds, json_body=body))
    cpu = tree_cpu_s(pid) - cpu0
    if r.errors:
        raise RuntimeError(f"{r.errors} of {r.requests} requests to {url} failed")
    return r.rps, r.p99_ms, cpu / max(1, r.requests) * 1e6


def webhook_throughput(report: Report, scale: Scale) -> dict[str, list[float]]:
    names = ("harkd", "bare aiohttp", "harkd, info log", "harkd, no run log")
    rps: dict[str, list[float]] = {n: [] for n in names}
    p99: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        folder = root / "pipelines"
        folder.mkdir()
        (folder / "hello.yaml").write_text(WIDE + pipeline_text(
            "Hello, {{ input.name | default('world') }}!"))
        ports = [free_port() for _ in names]
        warning = ("--log-level", "warning")
        cmds = {
            "harkd": (harkd_cmd(folder, ports[0], *warning), {}),
            "bare aiohttp": ([str(HARKD_PY), str(HERE / "bare.py"), str(ports[1])], {}),
            "harkd, info log": (harkd_cmd(folder, ports[2]), {}),
            # diagnostic: the same daemon with the run log's writes turned off
            "harkd, no run log": ([str(HARKD_PY), str(PROBE),
                                   *harkd_cmd(folder, ports[3], *warning)[3:]],
                                  {"BENCH_NO_RUNLOG": "1"}),
        }
        servers = {}
        for i, (name, (cmd, env)) in enumerate(cmds.items()):
            servers[name] = stack.enter_context(serve(
                cmd, ports[i], "/readyz", cpu=1, env={**harkd_env(root / f"s{i}"), **env}))
        urls = {n: servers[n].url("/hooks/hello") for n in names}
        for url in urls.values():  # warm up
            _throughput_short(url)
        for _ in range(scale.repeats):  # interleaved, so drift hits every variant alike
            for name in names:
                r, lat, c = _throughput(urls[name], scale, servers[name].pid)
                rps[name].append(r)
                p99[name].append(lat)
                cpu[name].append(c)
    tool = "wrk" if have_wrk() else "aiohttp client"
    S = Spread.of
    bare = S(rps["bare aiohttp"])
    for name, label in (("harkd", f"harkd req/s, {scale.concurrency} conns ({tool}), "
                                  "--log-level warning"),
                        ("harkd, info log", "harkd req/s, default log level (info)")):
        h = S(rps[name])
        report.add(Figure(SECTION_HOOK, label, h, "/s", "bare aiohttp", bare, goal="≥ 0.75x",
                          met=h.median / bare.median >= 0.75, digits=0))
    report.add(Figure(SECTION_HOOK, "harkd server CPU per request", S(cpu["harkd"]), " µs",
                      "bare aiohttp", S(cpu["bare aiohttp"]), goal="≤ 1.35x",
                      met=S(cpu["harkd"]).median <= 1.35 * S(cpu["bare aiohttp"]).median,
                      digits=0))
    report.add(Figure(SECTION_HOOK, "harkd p99 latency", S(p99["harkd"]), " ms",
                      "bare aiohttp", S(p99["bare aiohttp"]), digits=2))
    report.add(Figure(SECTION_HOOK, "diagnostic: harkd with run-log writes off, req/s",
                      S(rps["harkd, no run log"]), "/s", "harkd", S(rps["harkd"]), digits=0,
                      note="(bench/harkd_probe.py)"))
    report.add(Figure(SECTION_HOOK, "diagnostic: harkd with run-log writes off, CPU/request",
                      S(cpu["harkd, no run log"]), " µs", "harkd", S(cpu["harkd"]), digits=0))
    return {**rps, **{f"cpu:{k}": v for k, v in cpu.items()}}


def _throughput_short(url: str) -> None:
    asyncio.run(load(url, 4, count=200, json_body={"name": "warm"}))


# -- start-up, check, memory -----------------------------------------------------------

PROBE = HERE / "harkd_probe.py"


def startup(report: Report, scale: Scale, n: int = 100) -> dict[str, list[float]]:
    m: dict[str, list[float]] = {k: [] for k in (
        "ready", "ready_cpu", "warm", "warm_cpu", "bare_ready", "bare_ready_cpu", "rss",
        "bare_rss", "check", "check_cpu", "python", "python_cpu", "import_cpu")}
    repeats = 5 if scale.repeats > 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "pipelines"
        write_pipelines(folder, n, distinct=True)
        probe = PROBE
        for i in range(repeats):
            port, bport = free_port(), free_port()
            # First start: an empty state folder, so every file is parsed and validated.
            state = root / f"state-{i}"
            with serve(harkd_cmd(folder, port), port, "/readyz",
                       env=harkd_env(state)) as srv:
                m["ready"].append(srv.ready_s * 1000)
                m["ready_cpu"].append(srv.ready_cpu_s * 1000)
                asyncio.run(load(srv.url("/hooks/p1"), 2, count=20, json_body={}))
                time.sleep(1.0)
                m["rss"].append(srv.rss_mb())
            # Restart on the same state folder: the validated documents are cached there.
            with serve(harkd_cmd(folder, port), port, "/readyz", env=harkd_env(state)) as srv:
                m["warm"].append(srv.ready_s * 1000)
                m["warm_cpu"].append(srv.ready_cpu_s * 1000)
            with serve([str(HARKD_PY), str(HERE / "bare.py"), str(bport)], bport,
                       "/readyz") as bare:
                m["bare_ready"].append(bare.ready_s * 1000)
                m["bare_ready_cpu"].append(bare.ready_cpu_s * 1000)
                asyncio.run(load(bare.url("/hooks/x"), 2, count=20, json_body={}))
                time.sleep(1.0)
                m["bare_rss"].append(bare.rss_mb())
            r = timed_run([str(HARKD_PY), "-m", "harkd", "check", str(folder)])
            if r.code != 0:
                raise RuntimeError(f"harkd check failed ({r.code}): {r.output}")
            m["check"].append(r.seconds * 1000)
            m["check_cpu"].append(r.cpu * 1000)
            py = timed_run([str(HARKD_PY), "-c", "pass"])
            m["python"].append(py.seconds * 1000)
            m["python_cpu"].append(py.cpu * 1000)
            imp = timed_run([str(HARKD_PY), "-c", "import harkd.check, harkd.core.registry; "
                             "harkd.core.registry.default()"])
            m["import_cpu"].append(imp.cpu * 1000)
        # Which heavy modules did `harkd run` and `harkd check` import?
        seen: dict[str, list[str]] = {}
        port = free_port()
        out_run = root / "probe-run.json"
        with serve([str(HARKD_PY), str(probe), "run", "--pipelines", str(folder), "--listen",
                    f"127.0.0.1:{port}"], port, "/readyz",
                   env={**harkd_env(root / "state"), "BENCH_PROBE_OUT": str(out_run)}) as srv:
            asyncio.run(load(srv.url("/hooks/p1"), 1, count=5, json_body={}))
        out_check = root / "probe-check.json"
        timed_run([str(HARKD_PY), str(probe), "check", str(folder)],
                  env={"BENCH_PROBE_OUT": str(out_check)})
        for what, path in (("run", out_run), ("check", out_check)):
            seen[what] = json.loads(path.read_text())["heavy"] if path.exists() else ["?"]
    installed = timed_run([str(HARKD_PY), "-c", "import litellm"]).code == 0

    S = Spread.of
    bare = S(m["bare_ready"])
    for key, what in (("ready", "first start, empty state folder"),
                      ("warm", "restart, documents cached")):
        r = S(m[key])
        report.add(Figure(SECTION_START, f"cold start to /readyz, {n} pipelines, {what} "
                          "(wall)", r, " ms", "bare aiohttp to ready", bare, goal="≤ 1.3x",
                          met=r.median <= 1.3 * bare.median, digits=0))
        report.add(Figure(SECTION_START, f"cold start, {what}: CPU time until ready",
                          S(m[f"{key}_cpu"]), " ms", "bare aiohttp", S(m["bare_ready_cpu"]),
                          digits=0))
    c = S(m["check"])
    report.add(Figure(SECTION_START, f"`harkd check` of {n} files (wall)", c, " ms",
                      "`python -c pass`", S(m["python"]), goal="< 0.5 s",
                      met=c.median < 500, digits=0))
    report.add(Figure(SECTION_START, "`harkd check`, CPU time", S(m["check_cpu"]), " ms",
                      "`python -c pass`", S(m["python_cpu"]), digits=0))
    report.add(Figure(SECTION_START, "of which: imports + registry (CPU)", S(m["import_cpu"]),
                      " ms", "`python -c pass`", S(m["python_cpu"]), digits=0))
    mem = S(m["rss"])
    report.add(Figure(SECTION_START, f"idle RSS, {n} pipelines", mem, " MB",
                      "bare aiohttp + jinja2", S(m["bare_rss"]), goal="< 60 MB",
                      met=mem.median < 60))
    heavy = sorted(set(seen["run"]) | set(seen["check"]))
    report.note("heavy modules imported by `harkd run` (100 webhooks, served) and "
                f"`harkd check`: {', '.join(heavy) if heavy else 'none'} "
                f"(checked: {', '.join(HEAVY)}; litellm installed in harkd's venv: "
                f"{'yes' if installed else 'no'}) — goal: litellm never imported "
                + ("✅" if "litellm" not in heavy else "❌"))
    return m


def run(report: Report, scale: Scale, only: set[str] | None = None) -> dict[str, object]:
    data: dict[str, object] = {}
    steps = {"reload": reload_latency, "throughput": webhook_throughput, "startup": startup}
    for key, fn in steps.items():
        if only and key not in only:
            continue
        print(f"== core: {key}", flush=True)
        try:
            data[key] = fn(report, scale)
        except Exception as exc:  # noqa: BLE001 - one failed figure must not sink the suite
            report.note(f"core {key} failed: {type(exc).__name__}: {exc}")
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--smoke", action="store_true", help="tiny counts; checks the harness")
    p.add_argument("--only", help="comma-separated: reload, throughput, startup")
    p.add_argument("--out", type=Path, help=f"write Markdown here (default {RESULTS}/core.md)")
    args = p.parse_args(argv)
    scale = Scale.named("smoke" if args.smoke else "quick" if args.quick else "full")
    report = Report("harkd core figures")
    run(report, scale, set(args.only.split(",")) if args.only else None)
    out = args.out or RESULTS / "core.md"
    report.write(out)
    print(f"wrote {out}")
    return 0 if report.figures else 1


if __name__ == "__main__":
    raise SystemExit(main())
