"""harkd side by side with the tools users would pick instead (issue 7).

Peers live in their own venvs under ``bench/.venv-peers/`` (``bench/setup_peers.sh``); a
peer that is missing or fails to start is recorded in the report and skipped.

    python bench/peers.py            # everything (several minutes: LiteLLM starts slowly)
    python bench/peers.py --quick    # shorter runs, LiteLLM's proxy started once
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HARKD_PY,
    HELLO,
    HERE,
    PEERS,
    RESULTS,
    ROOT,
    Figure,
    Report,
    Server,
    Spread,
    free_port,
    harkd_cmd,
    harkd_env,
    have_wrk,
    load,
    peer_python,
    pipeline_text,
    serve,
    timed_run,
    write_pipelines,
    wrk,
)

SECTION_SERVE = "Pipeline serving: one-step template webhook (servers on one core)"
SECTION_START = "Start-up and footprint"
SECTION_GATEWAY = "LLM gateway overhead (scripted upstream)"
SECTION_FALLBACK = "Fallback: first deployment answers 500"
SECTION_CLI = "CLI one-shot against the scripted upstream"
TALKPIPE_SCRIPT = ('| fillTemplate[template="Hello, {name}!", fail_on_missing=False, '
                   'default="world"]')
WIDE = "concurrency: {max: 1024, mode: parallel}\n"
MASTER_KEY = "sk-bench-4f1c9a7e2b6d8053a1e9c4b7d2f60a8e"  # loopback only, required by the proxy
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "LITELLM_TELEMETRY": "False"}


@dataclass(frozen=True)
class Scale:
    seconds: float = 4.0
    repeats: int = 3
    levels: tuple[int, ...] = (1, 10, 100)
    starts: int = 3
    litellm_starts: int = 2
    cli_runs: int = 3

    @classmethod
    def named(cls, name: str) -> Scale:
        if name == "smoke":
            return cls(seconds=1.0, repeats=1, levels=(1, 4), starts=1, litellm_starts=0,
                       cli_runs=1)
        if name == "quick":
            return cls(seconds=1.5, repeats=1, starts=1, litellm_starts=0, cli_runs=1)
        return cls()


def gateway_exists() -> bool:
    return (ROOT / "daemon" / "harkd" / "http" / "gateway.py").exists()


# -- servers -----------------------------------------------------------------------------

@contextlib.contextmanager
def harkd_server(root: Path, n: int = 1, *, cpu: int | None = None, config: str | None = None,
                 wide: bool = True, level: str | None = None) -> Iterator[Server]:
    folder = root / "pipelines"
    if not folder.exists():
        folder.mkdir(parents=True)
        if n == 1:
            (folder / "p0.yaml").write_text((WIDE if wide else "") + pipeline_text(HELLO))
        else:
            write_pipelines(folder, n)
    extra: list[str] = ["--log-level", level] if level else []
    if config is not None:
        (root / "harkd.yaml").write_text(config)
        extra += ["--config", str(root / "harkd.yaml")]
    port = free_port()
    with serve(harkd_cmd(folder, port, *extra), port, "/readyz", env=harkd_env(root / "state"),
               cpu=cpu, cwd=root) as srv:
        yield srv


@contextlib.contextmanager
def talkpipe_server(cpu: int | None = None) -> Iterator[Server]:
    py = peer_python("talkpipe")
    if py is None:
        raise RuntimeError("talkpipe is not installed (bench/setup_peers.sh)")
    port = free_port()
    cmd = [str(py.parent / "chatterlang_serve"), "-o", "127.0.0.1", "-p", str(port),
           "--script", TALKPIPE_SCRIPT]
    with tempfile.TemporaryDirectory() as home, \
            serve(cmd, port, "/health", cpu=cpu, cwd=Path(home),
                  env={"HOME": home}) as srv:
        yield srv


@contextlib.contextmanager
def litellm_proxy(root: Path, models: str, *, cpu: int | None = None,
                  extra: str = "") -> Iterator[Server]:
    py = peer_python("litellm")
    if py is None:
        raise RuntimeError("litellm[proxy] is not installed (bench/setup_peers.sh)")
    port = free_port()
    cfg = root / "litellm.yaml"
    cfg.write_text(f"model_list:\n{models}\ngeneral_settings:\n  master_key: {MASTER_KEY}\n"
                   + extra)
    cmd = [str(py.parent / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
           "--port", str(port), "--num_workers", "1"]
    with serve(cmd, port, "/health/liveliness", cpu=cpu, cwd=root, timeout=180,
               env=LITELLM_ENV) as srv:
        yield srv


@contextlib.contextmanager
def upstream(cpu: int | None = None) -> Iterator[Server]:
    port = free_port()
    with serve([str(HARKD_PY), str(HERE / "upstream.py"), str(port)], port, "/health",
               cpu=cpu) as srv:
        yield srv


@contextlib.contextmanager
def driver_on(cpu: int) -> Iterator[None]:
    """Pin this process (the load generator) to one CPU for the block."""
    before = os.sched_getaffinity(0)
    try:
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {cpu})
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- pipeline serving ------------------------------------------------------------------

def serving(report: Report, scale: Scale) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {"harkd": {}, "chatterlang_serve": {}}
    body = {"name": "bench"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        h = stack.enter_context(harkd_server(Path(tmp), cpu=1, level="warning"))
        targets = {"harkd": h.url("/hooks/p0")}
        try:
            t = stack.enter_context(talkpipe_server(cpu=1))
            targets["chatterlang_serve"] = t.url("/process")
        except (RuntimeError, TimeoutError) as exc:
            report.note(f"chatterlang_serve not measured: {str(exc)[:300]}")
        with driver_on(0):
            for url in targets.values():
                asyncio.run(load(url, 4, count=100, json_body=body))
            for c in scale.levels:
                runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in targets}
                for _ in range(scale.repeats):
                    for name, url in targets.items():
                        r = asyncio.run(load(url, c, duration=scale.seconds, json_body=body))
                        if r.errors:
                            report.note(f"{name} at {c} clients: {r.errors} of {r.requests} "
                                        f"requests failed, statuses {r.statuses}")
                        runs[name].append((r.rps, r.p50_ms, r.p99_ms))
                for name, rs in runs.items():
                    out[name][c] = {"rps": Spread.of([x[0] for x in rs]).median,
                                    "p50": Spread.of([x[1] for x in rs]).median,
                                    "p99": Spread.of([x[2] for x in rs]).median}
                hs = [Spread.of([x[i] for x in runs["harkd"]]) for i in range(3)]
                report.add(Figure(SECTION_SERVE, f"harkd, {c} clients: req/s", hs[0], "/s",
                                  digits=0, note=f"p50 {hs[1].median:.2f} ms, "
                                  f"p99 {hs[2].median:.2f} ms"))
                if "chatterlang_serve" in runs:
                    ts = [Spread.of([x[i] for x in runs["chatterlang_serve"]]) for i in range(3)]
                    report.add(Figure(SECTION_SERVE, f"chatterlang_serve, {c} clients: req/s",
                                      ts[0], "/s", "harkd", hs[0], digits=0))
                    report.add(Figure(SECTION_SERVE, f"chatterlang_serve, {c} clients: p99",
                                      ts[2], " ms", "harkd", hs[2], digits=2))
    # the default concurrency limit (32 parallel runs) at 100 clients
    with tempfile.TemporaryDirectory() as tmp, harkd_server(Path(tmp), wide=False,
                                                            level="warning") as h:
        r = asyncio.run(load(h.url("/hooks/p0"), 100, duration=min(2.0, scale.seconds),
                             json_body=body))
        refused = r.statuses.get(429, 0)
        report.note(f"harkd with the default `concurrency` (max 32, parallel) at 100 clients: "
                    f"{refused} of {r.requests} requests "
                    f"({100 * refused / max(1, r.requests):.0f}%)"
                    " answered 429; the serving figures set `concurrency: {max: 1024}`")
    report.note("Load generator: Python aiohttp, one keep-alive connection and cookie jar per "
                "client (chatterlang_serve keys a session, and its compiled script, on a "
                "cookie), pinned to CPU 0; both servers pinned to CPU 1 and measured "
                "alternately. At high rates the client is the limit: compare ratios, not "
                "absolute req/s, with the wrk figure in the core section.")
    return out


# -- start-up and footprint ------------------------------------------------------------

def footprint(report: Report, scale: Scale) -> dict[str, dict[str, list[float]]]:
    names = ["bare aiohttp", "harkd (100 pipelines)", "chatterlang_serve", "LiteLLM proxy"]
    m: dict[str, dict[str, list[float]]] = {n: {"ready": [], "cpu": [], "rss": []}
                                            for n in names}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = ("  - model_name: default\n    litellm_params: {model: openai/fake, "
                  "api_base: 'http://127.0.0.1:9/v1', api_key: x}\n")
        for i in range(max(scale.starts, scale.litellm_starts)):
            starters: dict[str, contextlib.AbstractContextManager[Server]] = {}
            bport = free_port()
            if i < scale.starts:
                starters["bare aiohttp"] = serve(
                    [str(HARKD_PY), str(HERE / "bare.py"), str(bport)], bport, "/readyz")
                sub = root / f"h{i}"
                sub.mkdir()
                starters["harkd (100 pipelines)"] = harkd_server(sub, 100)
                starters["chatterlang_serve"] = talkpipe_server()
            if i < scale.litellm_starts:
                starters["LiteLLM proxy"] = litellm_proxy(root, models)
            for name, starter in starters.items():
                if name in failed:
                    continue
                try:
                    with starter as srv:
                        asyncio.run(load(srv.url("/readyz" if "aiohttp" in name or "harkd"
                                                 in name else "/health/liveliness" if "Lite"
                                                 in name else "/health"), 1, count=3,
                                         method="GET"))
                        time.sleep(1.0)
                        m[name]["ready"].append(srv.ready_s * 1000)
                        m[name]["cpu"].append(srv.ready_cpu_s * 1000)
                        m[name]["rss"].append(srv.rss_mb())
                except (RuntimeError, TimeoutError) as exc:
                    failed[name] = str(exc)[:300]
    for name, why in failed.items():
        report.note(f"{name} did not start: {why}")
    base = "bare aiohttp"
    for name in names[1:]:
        if not m[name]["ready"]:
            continue
        ref = base if name.startswith("harkd") else "harkd (100 pipelines)"
        report.add(Figure(SECTION_START, f"{name}: time to ready", Spread.of(m[name]["ready"]),
                          " ms", ref, Spread.of(m[ref]["ready"]), digits=0))
        report.add(Figure(SECTION_START, f"{name}: CPU used until ready",
                          Spread.of(m[name]["cpu"]), " ms", ref, Spread.of(m[ref]["cpu"]),
                          digits=0))
        report.add(Figure(SECTION_START, f"{name}: idle RSS", Spread.of(m[name]["rss"]), " MB",
                          ref, Spread.of(m[ref]["rss"])))
    report.note("Reload: neither peer reloads one pipeline in place. chatterlang_serve takes "
                "its script on the command line and LiteLLM's proxy its config at start, so "
                "their counterpart of harkd's reload latency is a restart: the time to ready "
                "above.")
    return m


# -- gateway ---------------------------------------------------------------------------

def gateway(report: Report, scale: Scale) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    if not gateway_exists():
        report.note("Gateway overhead not measured: daemon/harkd/http/gateway.py does not exist "
                    "yet (issue 3).")
        return out
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        up = stack.enter_context(upstream(cpu=0))
        api = up.url("/v1")
        hroot = root / "harkd"
        hroot.mkdir()
        h = stack.enter_context(harkd_server(hroot, config=(
            f"models:\n  default:\n    - {{model: openai/fake, api_base: '{api}', "
            "api_key: x}\n"), cpu=1, level="warning"))
        targets = {"direct": (up.url("/v1/chat/completions"), {}),
                   "harkd": (h.url("/v1/chat/completions"), {})}
        try:
            lp = stack.enter_context(litellm_proxy(root, (
                "  - model_name: default\n    litellm_params: {model: openai/fake, "
                f"api_base: '{api}', api_key: x}}\n"), cpu=1))
            targets["LiteLLM proxy"] = (lp.url("/v1/chat/completions"), auth)
        except (RuntimeError, TimeoutError) as exc:
            report.note(f"LiteLLM proxy not measured: {str(exc)[:300]}")
        for url, hdrs in targets.values():
            warm = asyncio.run(load(url, 2, count=20, json_body=chat, headers=hdrs))
            if warm.errors:
                report.note(f"gateway warm-up to {url}: statuses {warm.statuses}")
        for c in scale.levels:
            runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in targets}
            for _ in range(scale.repeats):
                for name, (url, hdrs) in targets.items():
                    r = (wrk(url, c, scale.seconds, json_body=chat, headers=hdrs)
                         if have_wrk() else
                         asyncio.run(load(url, c, duration=scale.seconds, json_body=chat,
                                          headers=hdrs)))
                    if r.errors:
                        report.note(f"{name} at {c}: {r.errors} failed, {r.statuses}")
                    runs[name].append((r.rps, r.p50_ms, r.p99_ms))
            d = [Spread.of([x[i] for x in runs["direct"]]) for i in range(3)]
            for name, rs in runs.items():
                s = [Spread.of([x[i] for x in rs]) for i in range(3)]
                out.setdefault(name, {})[c] = {"rps": s[0].median, "p50": s[1].median,
                                               "p99": s[2].median}
                if name == "direct":
                    continue
                # issue 13's goals, for harkd: at 100 clients at least 0.6x a direct call's
                # throughput, at one client at most 0.5 ms added to its p50
                wide = name == "harkd" and c >= 100
                report.add(Figure(SECTION_GATEWAY, f"{name}, {c} clients: req/s", s[0], "/s",
                                  "direct", d[0], digits=0, goal="≥ 0.6x" if wide else "",
                                  met=s[0].median >= 0.6 * d[0].median if wide else None))
                over50 = Spread.of([x[1] - y[1] for x, y in zip(rs, runs["direct"],
                                                               strict=True)])
                one = name == "harkd" and c == 1
                report.add(Figure(SECTION_GATEWAY, f"{name}, {c} clients: p50 / overhead",
                                  s[1], " ms", "direct", d[1], digits=2,
                                  goal="overhead ≤ 0.5 ms" if one else "",
                                  met=over50.median <= 0.5 if one else None,
                                  note=f"overhead {over50.median:.2f} ms, "
                                       f"p99 {s[2].median:.2f} vs {d[2].median:.2f} ms"))
        fallback(report, root, up, stack, scale)
    report.note("Gateway load generator: " + (
        "wrk (C, one thread, not pinned), so that the client's own CPU does not take the "
        "cores the servers share; Python's aiohttp client cost about 270 us a call, more "
        "than the upstream's 200 (`bench/gateway_cpu.py --split`)" if have_wrk() else
        "Python aiohttp (wrk is not installed): it shares the two cores with the servers, "
        "so the 100-client ratio comes out lower than with wrk"
    ) + "; the upstream pinned to CPU 0, harkd and LiteLLM's proxy to CPU 1.")
    return out


def fallback(report: Report, root: Path, up: Server, stack: contextlib.ExitStack,
             scale: Scale) -> None:
    """Two deployments, the first always 500: how many calls succeed, at what latency, and
    how often the broken one is still tried (cooldown)."""
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    bad, good = up.url("/fail/v1"), up.url("/v1")
    froot = root / "fallback"
    froot.mkdir()
    h = stack.enter_context(harkd_server(froot, config=(
        f"models:\n  default:\n    - {{model: openai/fake, api_base: '{bad}', api_key: x}}\n"
        f"    - {{model: openai/fake, api_base: '{good}', api_key: x}}\n"), level="warning"))
    targets = {"harkd": (h.url("/v1/chat/completions"), {})}
    try:
        lp = stack.enter_context(litellm_proxy(froot, (
            "  - model_name: default\n    litellm_params: {model: openai/fake, "
            f"api_base: '{bad}', api_key: x}}\n"
            "  - model_name: backup\n    litellm_params: {model: openai/fake, "
            f"api_base: '{good}', api_key: x}}\n"),
            extra="router_settings:\n  fallbacks: [{default: [backup]}]\n  num_retries: 0\n"))
        targets["LiteLLM proxy"] = (lp.url("/v1/chat/completions"),
                                    {"Authorization": f"Bearer {MASTER_KEY}"})
    except (RuntimeError, TimeoutError) as exc:
        report.note(f"LiteLLM fallback not measured: {str(exc)[:300]}")
    import urllib.request

    n = 200 if scale.repeats > 1 else 60
    for name, (url, hdrs) in targets.items():
        urllib.request.urlopen(urllib.request.Request(up.url("/stats/reset"), method="POST"))
        r = asyncio.run(load(url, 10, count=n, json_body=chat, headers=hdrs))
        with urllib.request.urlopen(up.url("/stats")) as resp:
            import json

            hits = json.loads(resp.read())
        ok = Spread.of([100 * (r.requests - r.errors) / max(1, r.requests)])
        report.add(Figure(SECTION_FALLBACK, f"{name}: calls answered 200 (%)", ok, "%",
                          digits=0, note=f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms; "
                          f"the 500 deployment was tried {hits.get('fail', 0)} times for "
                          f"{r.requests} calls"))


# -- CLI one-shot ----------------------------------------------------------------------

def cli(report: Report, scale: Scale) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, upstream() as up:
        root = Path(tmp)
        api = up.url("/v1")
        (root / "harkd.yaml").write_text(
            f"models:\n  default:\n    - {{model: openai/fake, api_base: '{api}', "
            "api_key: x}\n")
        llm_home = root / "llm"
        llm_home.mkdir()
        (llm_home / "extra-openai-models.yaml").write_text(
            f"- model_id: fake\n  model_name: fake\n  api_base: '{api}'\n")
        cmds: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([str(HARKD_PY), "-c", "pass"], {}),
            "harkd ask": ([str(HARKD_PY), "-m", "harkd", "ask", "--config",
                           str(root / "harkd.yaml"), "hi"], {"HARKD_STATE": str(root / "s")}),
        }
        ttt = peer_python("ttt")
        if ttt is not None:
            cmds["ttt ask"] = ([str(ttt.parent / "ttt"), "ask", "-m", "openai/fake", "hi"], {
                "OPENAI_API_KEY": "x", "OPENAI_API_BASE": api, "OPENAI_BASE_URL": api,
                "HOME": str(root), **LITELLM_ENV})
        else:
            report.note("ttt not measured: goobits-ttt is not installed")
        llm = peer_python("llm")
        if llm is not None:
            cmds["llm"] = ([str(llm.parent / "llm"), "-m", "fake", "--no-log", "hi"], {
                "OPENAI_API_KEY": "x", "LLM_USER_PATH": str(llm_home)})
        else:
            report.note("llm not measured: llm is not installed")
        for cmd, env in cmds.values():
            timed_run(cmd, env=env, cwd=root)  # warm the page cache, compile bytecode
        for _ in range(scale.cli_runs):
            for name, (cmd, env) in cmds.items():
                r = timed_run(cmd, env=env, cwd=root)
                if r.code != 0 or (name != "python -c pass"
                                   and "scripted upstream" not in r.output):
                    report.note(f"{name} failed (exit {r.code}): {r.output[-300:]!r}")
                    continue
                out.setdefault(name, []).append(r.seconds * 1000)
                cpu.setdefault(name, []).append(r.cpu * 1000)
    for name in out:
        if name == "python -c pass":
            continue
        ref = "python -c pass" if name == "harkd ask" else "harkd ask"
        report.add(Figure(SECTION_CLI, f"`{name}` wall", Spread.of(out[name]), " ms", ref,
                          Spread.of(out.get(ref, [])), digits=0))
        report.add(Figure(SECTION_CLI, f"`{name}` CPU", Spread.of(cpu[name]), " ms", ref,
                          Spread.of(cpu.get(ref, [])), digits=0))
    return out


def peers_status() -> str:
    status = PEERS / "STATUS"
    return status.read_text().strip().replace("\n", "; ") if status.exists() else \
        "bench/setup_peers.sh has not run"


def run(report: Report, scale: Scale, only: set[str] | None = None) -> dict[str, object]:
    report.note(f"peers (bench/setup_peers.sh): {peers_status()}")
    data: dict[str, object] = {}
    steps = {"serving": serving, "footprint": footprint, "gateway": gateway, "cli": cli}
    for key, fn in steps.items():
        if only and key not in only:
            continue
        print(f"== peers: {key}", flush=True)
        try:
            data[key] = fn(report, scale)
        except Exception as exc:  # noqa: BLE001 - one failed comparison must not sink the suite
            report.note(f"peers {key} failed: {type(exc).__name__}: {str(exc)[:400]}")
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--smoke", action="store_true")
    p.add_argument("--only", help="comma-separated: serving, footprint, gateway, cli")
    p.add_argument("--out", type=Path, help=f"write Markdown here (default {RESULTS}/peers.md)")
    args = p.parse_args(argv)
    scale = Scale.named("smoke" if args.smoke else "quick" if args.quick else "full")
    report = Report("harkd and its peers")
    run(report, scale, set(args.only.split(",")) if args.only else None)
    out = args.out or RESULTS / "peers.md"
    report.write(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
