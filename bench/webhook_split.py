"""Where a webhook request's CPU goes, stage by stage (issue 13): the one-step template
webhook of ``core.py`` served by harkd with the work after a stage cut off, next to
``bare.py``, each pinned to CPU 1 under ``wrk`` on CPU 0 (32 connections), interleaved.

Each row adds one stage to the row above it; its delta is what that stage costs per
request in CPU of the whole process (all threads: the run log's writer thread is its own
column). The cut-off daemons are this script run as ``--serve STAGE``, which patches
harkd in its own process before starting it: a diagnostic, never a way to serve.

    .venv/bin/python bench/webhook_split.py [--seconds 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HARKD_PY,
    HERE,
    free_port,
    harkd_env,
    machine,
    pipeline_text,
    serve,
    wrk,
)

TEMPLATE = "Hello, {{ input.name | default('world') }}!"
WIDE = "concurrency: {max: 1024, mode: parallel}\n"
#: (name, what the row adds), in order; each stage includes the ones above it
STAGES = (
    ("bare", "bare aiohttp (bench/bare.py): read, json.loads, render, answer"),
    ("shell", "harkd's app: token middleware, catch-all route, dispatch; read the body, "
              "fixed answer"),
    ("trigger", "+ the http trigger: body, parse, trigger data, template render, text answer"),
    ("objects", "+ the run's objects: Run, RunResult, result_response"),
    ("bound", "+ the run boundary and engine (gate, StepRecord, steps), no observers"),
    ("observers", "+ metrics and the console's observer (run log off)"),
    ("full", "+ the run log (the whole daemon)"),
)


def _patch(stage: str) -> None:
    """Cut harkd off after ``stage`` (in the ``--serve`` process only)."""
    from aiohttp import web

    from harkd import daemon, services, templates
    from harkd.core.run import RunResult
    from harkd.runlog import RunLog
    from harkd.triggers import http

    if stage == "shell":
        async def dispatch(request: web.Request) -> web.StreamResponse:
            await request.read()
            return web.Response(text="Hello, bench!", content_type="text/plain",
                                charset="utf-8")

        daemon._dispatch = dispatch  # type: ignore[assignment]
    if stage in ("trigger", "objects"):
        async def handle(self: http.HttpTrigger, request: web.Request,
                         bound: Any) -> web.StreamResponse:
            data = http.parse_body(request, await http.read_body(request, self.max_body))
            trigger = http.trigger_data(request)
            if stage == "trigger":
                return web.Response(text=templates._render(TEMPLATE, {"input": data}),
                                    content_type="text/plain", charset="utf-8")
            run = bound.new_run(data, trigger)
            text = templates._render(TEMPLATE, run.context(data))
            return http.result_response(RunResult(run.id, "ok", text, duration=0.0))

        http.HttpTrigger.handle = handle  # type: ignore[method-assign]
    if stage == "bound":
        class Ignored(list[Any]):
            def append(self, item: Any) -> None:
                return None

        init = services.Services.__init__

        def no_observers(self: services.Services, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            self.observers = Ignored()

        services.Services.__init__ = no_observers  # type: ignore[method-assign]
    if stage == "observers":
        RunLog.run_started = lambda self, run: None  # type: ignore[method-assign]
        RunLog.run_finished = lambda self, run, result: None  # type: ignore[method-assign]


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the process's main thread and of all its other threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(tid) == pid:
            main += used
        else:
            other += used
    return main, other


def measure(seconds: float, repeats: int) -> dict[str, list[tuple[float, float, float]]]:
    """Per stage, per repeat: (µs per request in the main thread, in other threads, req/s)."""
    out: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in STAGES}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        folder = root / "pipelines"
        folder.mkdir()
        (folder / "hello.yaml").write_text(WIDE + pipeline_text(TEMPLATE))
        servers = {}
        for i, (name, _) in enumerate(STAGES):
            port = free_port()
            if name == "bare":
                cmd = [str(HARKD_PY), str(HERE / "bare.py"), str(port)]
            else:
                cmd = [str(HARKD_PY), __file__, "--serve", name, "run", "--pipelines",
                       str(folder), "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
            servers[name] = stack.enter_context(serve(cmd, port, "/readyz", cpu=1,
                                                      env=harkd_env(root / f"s{i}")))
        urls = {name: srv.url("/hooks/hello") for name, srv in servers.items()}
        for url in urls.values():
            wrk(url, 32, 1, json_body={"name": "warm"}, cpu=0)
        for _ in range(repeats):
            for name, srv in servers.items():
                m0, o0 = _cpu(srv.pid)
                r = wrk(urls[name], 32, seconds, json_body={"name": "bench"}, cpu=0)
                m1, o1 = _cpu(srv.pid)
                if r.errors:
                    raise RuntimeError(f"{name}: {r.errors} of {r.requests} requests failed")
                n = max(1, r.requests)
                out[name].append(((m1 - m0) / n * 1e6, (o1 - o0) / n * 1e6, r.rps))
    return out


def report(results: dict[str, list[tuple[float, float, float]]]) -> str:
    lines = [f"Webhook CPU per request by stage ({machine()}); each row adds to the one above",
             "", "| stage | main thread µs | other threads µs | total µs | delta µs | "
             "req/s | total / bare |", "|---|---|---|---|---|---|---|"]
    bare = prev = None
    for name, what in STAGES:
        runs = results[name]
        main = sorted(r[0] for r in runs)[len(runs) // 2]
        other = sorted(r[1] for r in runs)[len(runs) // 2]
        total = sorted(r[0] + r[1] for r in runs)[len(runs) // 2]
        rps = sorted(r[2] for r in runs)[len(runs) // 2]
        bare = total if bare is None else bare
        delta = "" if prev is None else f"{total - prev:+.0f}"
        each = " / ".join(f"{r[0] + r[1]:.0f}" for r in runs)
        lines.append(f"| {what} | {main:.0f} | {other:.0f} | {total:.0f} ({each}) | {delta} | "
                     f"{rps:,.0f} | {total / bare:.2f}x |")
        prev = total
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        # as ``python -m harkd`` starts: the collector off until ready (then on, with the
        # start-up objects frozen)
        gc.disable()
        _patch(sys.argv[2])
        from harkd.cli import main as harkd

        sys.argv = ["harkd", *sys.argv[3:]]
        sys.exit(harkd(collect=True))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(report(measure(args.seconds, args.repeats)))


if __name__ == "__main__":
    main()
