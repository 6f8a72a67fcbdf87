"""harkd speaks the systemd notify protocol over a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from harkd.testing import spawn_daemon

from .helpers import NotifyListener

ECHO = "trigger: {http: {}}\nsteps:\n  - template: hi\n"
BROKEN = "trigger: {http: {}}\nsteps: 3\n"


def _usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_start_reload_status_watchdog_stop_in_order(
        tmp_path: Path, notify_socket: NotifyListener) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    with spawn_daemon(tmp_path, {"echo": ECHO, "broken": BROKEN}, env=env) as d:
        ready = notify_socket.wait_for(lambda m: "READY" in m)
        assert ready == {"READY": "1", "STATUS": "1 active, 0 stale, 1 rejected"}
        # The event loop pings at half of WATCHDOG_USEC, for as long as it runs.
        notify_socket.wait_for(lambda m: m == {"WATCHDOG": "1"})
        notify_socket.wait_for(lambda m: m == {"WATCHDOG": "1"})

        before = _usec()
        d.signal(signal.SIGHUP)
        reloading = notify_socket.wait_for(lambda m: "RELOADING" in m)
        after = _usec()
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        assert notify_socket.wait_for(lambda m: "READY" in m)["STATUS"] == \
            "1 active, 0 stale, 1 rejected"

        (d.folder / "broken.yaml").write_text(ECHO)
        notify_socket.wait_for(lambda m: m.get("STATUS") == "2 active, 0 stale, 0 rejected")

        d.signal(signal.SIGTERM)
        stopping = notify_socket.wait_for(lambda m: "STOPPING" in m)
        assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
        assert d.wait() == 0
    notify_socket.drain()

    kinds = notify_socket.kinds()
    assert kinds[0] == "READY"
    assert kinds[-1] == "STOPPING"
    reload_at = kinds.index("RELOADING")
    assert "READY" in kinds[reload_at:]
    assert kinds.count("STOPPING") == 1
    first_ping = notify_socket.messages.index({"WATCHDOG": "1"})
    first_ready = next(i for i, m in enumerate(notify_socket.messages) if "READY" in m)
    assert first_ready < first_ping


def test_abstract_socket_and_no_watchdog_for_another_pid(tmp_path: Path) -> None:
    listener = NotifyListener(f"@harkd-test-{uuid.uuid4().hex}")
    try:
        env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000",
               "WATCHDOG_PID": str(os.getpid())}  # pings are meant for this process
        with spawn_daemon(tmp_path, {"echo": ECHO}, env=env) as d:
            listener.wait_for(lambda m: "READY" in m)
            d.signal(signal.SIGHUP)
            listener.wait_for(lambda m: "RELOADING" in m)
            listener.wait_for(lambda m: "READY" in m)
            d.signal(signal.SIGTERM)
            listener.wait_for(lambda m: "STOPPING" in m)
            assert d.wait() == 0
        listener.drain()
        assert {"WATCHDOG": "1"} not in listener.messages
        assert listener.kinds() == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        listener.close()
