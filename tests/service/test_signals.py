"""SIGTERM drains in-flight runs and exits 0; a second SIGTERM exits at once."""

from __future__ import annotations

import signal
from pathlib import Path

from harkd.testing import spawn_daemon

from .helpers import NotifyListener, Upstream, connection_refused, poll, post_async, relay_pipeline


def test_sigterm_stops_accepting_and_lets_inflight_runs_finish(
        tmp_path: Path, notify_socket: NotifyListener, upstream: Upstream) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address}
    with spawn_daemon(tmp_path, {"relay": relay_pipeline(upstream.url)}, env=env) as d:
        posted = [post_async(d.url("/hooks/relay"), {"n": i}) for i in range(5)]
        upstream.wait_arrived(5)
        d.signal(signal.SIGTERM)
        notify_socket.wait_for(lambda m: "STOPPING" in m)
        poll(lambda: connection_refused(d.base))  # new connections are refused...
        assert d.proc.poll() is None              # ...while the runs are still going
        upstream.release()
        answers = sorted(p.join() for p in posted)
        assert answers == sorted((200, f"done {i}") for i in range(5))
        assert d.wait() == 0
        out = d.output()
    assert '"drained": true' in out
    assert "daemon_stopped" in out


def test_sigint_works_like_sigterm(tmp_path: Path) -> None:
    with spawn_daemon(tmp_path, {"echo": "trigger: {http: {}}\nsteps: [{template: hi}]\n"}) as d:
        d.signal(signal.SIGINT)
        assert d.wait() == 0


def test_second_sigterm_exits_at_once(
        tmp_path: Path, notify_socket: NotifyListener, upstream: Upstream) -> None:
    # A shutdown that would wait ten minutes for the held run, unless the second signal
    # cuts it short.
    env = {"NOTIFY_SOCKET": notify_socket.address, "HARKD_SHUTDOWN_TIMEOUT": "600s"}
    with spawn_daemon(tmp_path, {"relay": relay_pipeline(upstream.url)}, env=env) as d:
        held = post_async(d.url("/hooks/relay"), {"n": 1})
        upstream.wait_arrived(1)
        d.signal(signal.SIGTERM)
        notify_socket.wait_for(lambda m: "STOPPING" in m)
        assert d.proc.poll() is None
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 1
        assert "daemon_exit_now" in d.output()
        upstream.release()
        held.thread.join(10)
        assert "status" not in held.result  # the held run was cut off, not answered
