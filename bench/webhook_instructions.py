"""Instructions per webhook request (issue 13): the one-step template webhook of
``core.py`` served by harkd (run log on, log level warning) and by ``bare.py``, each
under valgrind's callgrind, which counts the instructions every thread of the server
runs in user space. On a shared host, where wall-clock CPU per request swings by a third
from run to run, this count does not move, so it tells a change's effect apart from noise.

Each server is started once outside valgrind (so that both counted runs are restarts on
the same state folder), then run twice: answering ``--requests`` requests after 300 to
warm up, and answering none after the same warm-up; the difference divided by
``--requests`` is what one request costs, with start-up and shutdown cancelled out.
Requests go one at a time over one keep-alive connection. System calls' kernel time is
not counted (the same for both servers); Python under callgrind runs about 50 times
slower, so this takes minutes.

    .venv/bin/python bench/webhook_instructions.py [--requests 6000]
    .venv/bin/python bench/webhook_instructions.py --tree /tmp/old/daemon  # another tree too
    .venv/bin/python bench/webhook_instructions.py --keep /tmp/cg  # keep callgrind's files

``--keep`` writes one callgrind file per thread (``--separate-threads=yes``), named
``<server>-<requests>.<pid>-<thread>``, for ``callgrind_annotate``: the run log's writer
thread is the one whose top functions are SQLite's.

Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import re
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind
from callgrind import Spec
from common import HARKD_PY, HERE, free_port, harkd_cmd, harkd_env, pipeline_text

TEMPLATE = "Hello, {{ input.name | default('world') }}!"
WIDE = "concurrency: {max: 1024, mode: parallel}\n"
WARM = 300
BODY = b'{"name": "bench"}'


def requests(port: int, n: int) -> None:
    """``n`` POSTs to /hooks/hello, one after another on one connection; each must be 200."""
    head = (b"POST /hooks/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(BODY))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(n):
            s.sendall(head + BODY)
            while True:
                top, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    found = re.search(rb"(?i)content-length:\s*(\d+)", top)
                    if found is None:
                        raise RuntimeError(f"answer without a length: {top[:200]!r}")
                    length = int(found[1])
                    if len(rest) >= length:
                        if not top.startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(f"answer: {top[:200]!r}")
                        buf = rest[length:]
                        break
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf += chunk


def per_request(cmd_for: Callable[[int], list[str]], env: dict[str, str], n: int,
                keep: str | None = None) -> float:
    """Instructions per request: the server started once outside valgrind (serving a
    few requests), then counted twice, answering ``n`` requests after ``WARM`` and none.

    Priming leaves what a first start makes in the state folder (the compiled-document
    cache, the run log's database) there for both counted runs. Without it the run with
    no requests was the first start and the other a restart, and the difference of the
    two took the first start's extra work off the per-request figure (a change to it
    moved that figure)."""
    def spec(port: int) -> Spec:
        return Spec(cmd_for(port), env, f"http://127.0.0.1:{port}/readyz")

    port = free_port()
    callgrind.run([spec(port)], lambda: requests(port, 10), counted=False)
    counts = []
    for k in (0, n):
        port = free_port()

        def drive(port: int = port, k: int = k) -> None:
            requests(port, WARM)
            requests(port, k)

        counts += callgrind.run([spec(port)], drive,
                                keep=[None if keep is None else f"{keep}-{k}"])
    return (counts[1] - counts[0]) / n


def main() -> int:
    ap = callgrind.parser(__doc__)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--no-bare", action="store_true",
                    help="count only harkd (the table's ratios are then to the first tree)")
    args = ap.parse_args()
    trees = callgrind.trees(args.tree)
    if trees is None:
        return 2
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "pipelines"
        folder.mkdir()
        (folder / "hello.yaml").write_text(WIDE + pipeline_text(TEMPLATE))
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)

        def keep(name: str) -> str | None:
            return None if args.keep is None else str(args.keep / name)

        rows: list[tuple[str, float]] = []
        if not args.no_bare:
            rows.append(("bare aiohttp (bench/bare.py)", per_request(
                lambda port: [str(HARKD_PY), str(HERE / "bare.py"), str(port)], {}, n,
                keep("bare"))))
        for i, tree in enumerate(trees):
            # "this tree" is the daemon/ beside this script (a worktree's, run from there),
            # whichever harkd the interpreter has installed
            env = {**harkd_env(root / f"state-{i}"), "PYTHONPATH": tree}
            rows.append((f"harkd ({tree if i else 'this tree'})", per_request(
                lambda port: harkd_cmd(folder, port, "--log-level", "warning"), env, n,
                keep(f"harkd{i}"))))
    bare = rows[0][1]
    print(f"Instructions per webhook request, {n:,} requests after {WARM} (callgrind, all "
          f"threads, user space)\n")
    print(f"| server | instructions per request | / {'first' if args.no_bare else 'bare'} |"
          "\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value / 1000:,.1f}k | {value / bare:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
