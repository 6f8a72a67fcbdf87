"""Helpers for the service tests: a real notify socket and an upstream that holds runs."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class NotifyListener:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def _recv(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        self.messages.append(fields)
        return True

    def wait_for(self, predicate: Callable[[dict[str, str]], bool],
                 timeout: float = 30.0) -> dict[str, str]:
        """The first message from now on that matches; earlier ones stay recorded."""
        deadline = time.monotonic() + timeout
        start = len(self.messages)
        while True:
            for msg in self.messages[start:]:
                if predicate(msg):
                    return msg
            start = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching notify message; got {self.messages}")
            self._recv(min(left, 1.0))

    def drain(self) -> None:
        """Read whatever has arrived so far."""
        while self._recv(0.05):
            pass

    def kinds(self) -> list[str]:
        """The messages as their first key (READY, RELOADING, STATUS, ...), no WATCHDOG."""
        return [next(iter(m)).split("=")[0] for m in self.messages if "WATCHDOG" not in m]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


@dataclass
class Upstream:
    """An HTTP server whose answers wait until :meth:`release`: runs stay in flight."""

    server: http.server.ThreadingHTTPServer
    gate: threading.Event = field(default_factory=threading.Event)
    arrived: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/slow"

    def release(self) -> None:
        self.gate.set()

    def wait_arrived(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.arrived)} of {n} requests arrived upstream")
            time.sleep(0.01)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    holder: dict[str, Upstream] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            up = holder["up"]
            up.arrived.append(body.decode())
            up.gate.wait(120)
            payload = json.dumps({"echo": json.loads(body or b"null")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the daemon hung up (the second-SIGTERM test): expected

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    up = holder["up"] = Upstream(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield up
    up.release()
    server.shutdown()
    server.server_close()


def relay_pipeline(url: str) -> str:
    """A webhook pipeline whose run waits on ``url`` and answers with its echo."""
    return ("trigger: {http: {}}\nconcurrency: {max: 200}\nsteps:\n"
            f"  - http: {{url: '{url}', method: POST, json: '{{{{ input }}}}'}}\n"
            "  - template: 'done {{ input.echo.n }}'\n")


@dataclass
class Posted:
    """A request sent from a thread; ``status`` and ``body`` once it is answered."""

    thread: threading.Thread
    result: dict[str, Any] = field(default_factory=dict)

    def join(self, timeout: float = 60.0) -> tuple[int, str]:
        self.thread.join(timeout)
        if "status" not in self.result:
            raise TimeoutError(f"request not answered: {self.result}")
        return self.result["status"], self.result["body"]


def post_async(url: str, payload: Any, timeout: float = 120.0) -> Posted:
    """POST JSON from a thread, so many requests can be in flight at once."""
    result: dict[str, Any] = {}

    def send() -> None:
        req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result["status"], result["body"] = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            result["status"], result["body"] = exc.code, exc.read().decode()
        except OSError as exc:
            result["error"] = repr(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return Posted(thread, result)


def connection_refused(url: str) -> bool:
    """True once nothing accepts connections on ``url``'s port."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def poll(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)
