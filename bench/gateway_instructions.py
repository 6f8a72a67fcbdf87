"""Instructions per gateway call (issue 13): ``POST /v1/chat/completions`` through harkd
(log level warning) to the scripted upstream (``upstream.py``), whole and streamed, with
both servers under valgrind's callgrind, which counts the instructions every thread runs
in user space. The upstream's count for the same calls is the baseline: it is one aiohttp
server answering one request, what a proxy hop cannot go below. On a shared host, where
CPU per call swings by a third from run to run, these counts do not move.

As ``webhook_instructions.py``: the two servers are started once outside valgrind, then
counted three times, after the same warm-up (300 whole and 300 streamed calls): answering
no more calls, ``--calls`` whole calls, and ``--calls`` streamed calls. A call's figure
is the difference with the first run, divided by ``--calls``. Calls go one at a time over
one keep-alive connection to harkd, which keeps one to the upstream.

    .venv/bin/python bench/gateway_instructions.py [--calls 2000]
    .venv/bin/python bench/gateway_instructions.py --tree /tmp/old/daemon  # another tree too
    .venv/bin/python bench/gateway_instructions.py --keep /tmp/cg  # keep callgrind's files

``--keep`` writes one callgrind file per thread, named
``<server><tree>-<run>.<pid>-<thread>`` (``harkd0-whole.1234-01``, ``upstream0-none...``),
for ``callgrind_annotate``. Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind
from callgrind import Spec
from common import HARKD_PY, HELLO, HERE, free_port, harkd_cmd, harkd_env, pipeline_text

WARM = 300
CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
BODIES = {"whole": json.dumps(CHAT).encode(),
          "streamed": json.dumps({**CHAT, "stream": True}).encode()}


def calls(port: int, kind: str, n: int) -> None:
    """``n`` calls of ``kind`` to harkd's gateway, one after another on one connection;
    each must be answered 200 (a streamed one to its ``[DONE]``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", BODIES[kind],
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or (kind == "streamed" and b"[DONE]" not in body):
                raise RuntimeError(f"{kind} call: {resp.status} {body[:300]!r}")
    finally:
        conn.close()


def per_call(root: Path, tree: str, i: int, n: int, keep: Path | None
             ) -> dict[tuple[str, str], float]:
    """Instructions per call by (server, kind) with harkd of ``tree``: the servers primed,
    then counted after the warm-up with no more calls, ``n`` whole and ``n`` streamed."""
    up_port, port = free_port(), free_port()
    config = root / f"harkd-{i}.yaml"
    config.write_text(f"models:\n  default:\n    - {{model: openai/fake, api_base: "
                      f"'http://127.0.0.1:{up_port}/v1', api_key: x}}\n")
    env = {**harkd_env(root / f"state-{i}"), "PYTHONPATH": tree, "PYTHONHASHSEED": "0"}
    specs = [Spec([str(HARKD_PY), str(HERE / "upstream.py"), str(up_port)], {"PYTHONHASHSEED": "0"},
                  f"http://127.0.0.1:{up_port}/health"),
             Spec(harkd_cmd(root / "pipelines", port, "--log-level", "warning", "--config",
                            str(config)), env, f"http://127.0.0.1:{port}/readyz")]
    callgrind.run(specs, lambda: calls(port, "whole", 10), counted=False)
    counts: dict[str, list[int]] = {}
    for run in ("none", "whole", "streamed"):

        def drive(run: str = run) -> None:
            calls(port, "whole", WARM)
            calls(port, "streamed", WARM)
            if run != "none":
                calls(port, run, n)

        counts[run] = callgrind.run(specs, drive, keep=[] if keep is None else [
            str(keep / f"{server}{i}-{run}") for server in ("upstream", "harkd")])
    return {(server, kind): (counts[kind][j] - counts["none"][j]) / n
            for j, server in enumerate(("upstream", "harkd")) for kind in ("whole", "streamed")}


def main() -> int:
    ap = callgrind.parser(__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    trees = callgrind.trees(args.tree)
    if trees is None:
        return 2
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pipelines").mkdir()
        (root / "pipelines" / "hello.yaml").write_text(pipeline_text(HELLO))
        for i, tree in enumerate(trees):
            rows.append(("this tree" if i == 0 else tree,
                         per_call(root, tree, i, args.calls, args.keep)))
    print(f"Instructions per gateway call, {args.calls:,} calls of each kind after {WARM} "
          "(callgrind, all threads, user space); the baseline is the upstream's count for "
          "the same calls\n")
    print("| harkd | whole call: harkd | upstream | ratio | streamed: harkd | upstream | ratio |"
          "\n|---|---|---|---|---|---|---|")
    for name, fig in rows:
        cells = [f"{fig['harkd', k] / 1000:,.1f}k | {fig['upstream', k] / 1000:,.1f}k | "
                 f"{fig['harkd', k] / fig['upstream', k]:.3f}x" for k in ("whole", "streamed")]
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
