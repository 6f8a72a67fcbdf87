"""Run the whole benchmark suite and write ``bench/results/report.md`` with PNG plots.

    bash bench/setup_peers.sh          # once: peers and matplotlib in bench/.venv-peers/
    python bench/run_all.py            # everything: several minutes
    python bench/run_all.py --quick    # a subset in about two minutes

Runs under the bench venv (``bench/.venv-peers/bench``, which has matplotlib) when it
exists, re-executing itself there; harkd itself always runs from ``.venv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core
import peers
from common import PEERS, RESULTS, Report, machine


def _reexec_in_bench_venv() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        py = PEERS / "bench" / "bin" / "python"
        if py.exists() and os.environ.get("HARKD_BENCH_REEXEC") != "1":
            os.environ["HARKD_BENCH_REEXEC"] = "1"
            os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


def plots(data: dict[str, Any], out: Path) -> list[str]:
    """One PNG per comparison; returns the files written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(str(path))

    reload = data.get("core", {}).get("reload")
    if reload:
        from common import percentile

        fig, ax = plt.subplots(figsize=(6, 3.5))
        sizes = sorted(reload)
        xs = range(len(sizes))
        ax.bar([x - 0.2 for x in xs], [percentile(reload[n], 50) for n in sizes], 0.4,
               label="p50")
        ax.bar([x + 0.2 for x in xs], [percentile(reload[n], 95) for n in sizes], 0.4,
               label="p95")
        ax.axhline(150, color="red", linestyle="--", label="goal p95 150 ms")
        ax.set_xticks(list(xs), [f"1 of {n:,}" for n in sizes])
        ax.set_ylabel("ms, write → new version answers")
        ax.set_title("harkd reload latency")
        ax.legend()
        save(fig, "reload")

    tp = data.get("core", {}).get("throughput")
    if tp:
        import statistics

        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = [k for k, v in tp.items() if v]
        ax.bar(names, [statistics.median(tp[k]) for k in names],
               yerr=[[statistics.median(tp[k]) - min(tp[k]) for k in names],
                     [max(tp[k]) - statistics.median(tp[k]) for k in names]], capsize=4)
        ax.set_ylabel("requests/s (one core)")
        ax.set_title("One-step template webhook vs bare aiohttp")
        save(fig, "throughput")

    for key, title, fname in (("serving", "Template pipeline served", "serving"),
                              ("gateway", "/v1/chat/completions via", "gateway")):
        series = data.get("peers", {}).get(key)
        if not series:
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        for name, by_c in series.items():
            if not by_c:
                continue
            cs = sorted(by_c)
            a1.plot(cs, [by_c[c]["rps"] for c in cs], marker="o", label=name)
            a2.plot(cs, [by_c[c]["p99"] for c in cs], marker="o", label=name)
        for a, label in ((a1, "requests/s"), (a2, "p99 latency, ms")):
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel("concurrent clients")
            a.set_ylabel(label)
            a.legend()
        fig.suptitle(title)
        save(fig, fname)

    fp = data.get("peers", {}).get("footprint")
    if fp:
        import statistics

        names = [n for n, v in fp.items() if v["ready"]]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        a1.barh(names, [statistics.median(fp[n]["ready"]) / 1000 for n in names])
        a1.set_xlabel("seconds to ready")
        a2.barh(names, [statistics.median(fp[n]["rss"]) for n in names])
        a2.set_xlabel("idle RSS, MB")
        a2.set_yticks([])
        fig.suptitle("Start-up and footprint")
        save(fig, "footprint")

    cli = data.get("peers", {}).get("cli")
    if cli:
        import statistics

        fig, ax = plt.subplots(figsize=(6, 3))
        names = list(cli)
        ax.barh(names, [statistics.median(cli[n]) / 1000 for n in names])
        ax.set_xlabel("seconds, one question to the scripted upstream")
        ax.set_title("CLI one-shot")
        save(fig, "cli")
    return files


def main(argv: list[str] | None = None) -> int:
    _reexec_in_bench_venv()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="core figures and pipeline serving, short runs (~2 min)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    name = "quick" if args.quick else "full"
    report = Report(f"harkd benchmarks ({name})")
    header = (f"{machine()}. The machine is shared with other engineers' builds and tests: "
              "treat absolute numbers as noisy and read the ratios (both sides measured "
              "alternately in the same run).")
    data: dict[str, Any] = {"core": core.run(report, core.Scale.named(name))}
    only = {"serving", "footprint"} if args.quick else None
    data["peers"] = peers.run(report, peers.Scale.named(name), only)
    if args.quick:
        report.note("--quick leaves out the gateway, fallback and CLI comparisons and "
                    "LiteLLM's proxy start-up; run without --quick for them.")
    args.out.mkdir(parents=True, exist_ok=True)
    report.plots = plots(data, args.out)
    report.write(args.out / "report.md", header + f" Load average at the end: "
                 f"{os.getloadavg()[0]:.2f}.")
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
