"""The Containerfile and the Quadlet: checked as text always, built and run with Podman
when this machine can (set HARKD_TEST_BASE_IMAGE to a local Python 3.11 image)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harkd.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_runs_harkd_unprivileged_with_a_state_volume() -> None:
    ins = _instructions()
    words = [w for w, _ in ins]
    froms = [rest for w, rest in ins if w == "FROM"]
    assert len(froms) == 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert "python:3.11-slim" in CONTAINERFILE
    final = words[len(words) - words[::-1].index("FROM"):]  # the last stage
    assert "USER" in final
    user = [rest for w, rest in ins if w == "USER"][-1]
    assert user not in ("root", "0") and not user.startswith("0:")
    assert ("VOLUME", '["/var/lib/harkd"]') in ins
    health = next(rest for w, rest in ins if w == "HEALTHCHECK")
    assert health.endswith('CMD ["harkd", "health", "--quiet"]')
    assert ("ENTRYPOINT", '["harkd"]') in ins and ("CMD", '["run"]') in ins
    env = " ".join(rest for w, rest in ins if w == "ENV")
    for want in ("HARKD_STATE=/var/lib/harkd", "HARKD_PIPELINES=/etc/harkd/pipelines",
                 "HARKD_LISTEN=0.0.0.0:8420"):
        assert want in env
    # Extras are opt-in, so the plain image carries no voice or model packages.
    assert 'ARG EXTRAS=""' in CONTAINERFILE
    assert '"/src${EXTRAS:+[${EXTRAS}]}"' in CONTAINERFILE


def test_containerignore_keeps_the_venv_out() -> None:
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_quadlet_carries_the_health_check_and_a_read_only_pipelines_mount() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((ROOT / "systemd" / "harkd.container").read_text())
    c = unit["Container"]
    assert c["HealthCmd"] == "harkd health --quiet"
    assert c["Notify"] == "true"
    assert c["PublishPort"].startswith("127.0.0.1:")
    assert "HARKD_TOKEN" in c["Secret"]
    volumes = unit.get("Container", "Volume", raw=True)
    assert volumes  # configparser keeps the last of repeated keys; check the text too
    text = (ROOT / "systemd" / "harkd.container").read_text()
    assert "Volume=/etc/harkd/pipelines:/etc/harkd/pipelines:ro" in text
    assert "Volume=harkd-state:/var/lib/harkd" in text
    assert unit["Service"]["ExecReload"].endswith("kill --signal HUP harkd")


BASE = os.environ.get("HARKD_TEST_BASE_IMAGE", "")


def _podman(*args: str, timeout: float = 900, check: bool = True,
            stderr: bool = False) -> str:
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    proc = subprocess.run(["podman", *runtime, *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return (proc.stdout + (proc.stderr if stderr else "")).strip()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    if not BASE:
        pytest.skip("set HARKD_TEST_BASE_IMAGE to a local Python 3.11 image to build "
                    "(no registry to pull python:3.11-slim from here)")
    tag = "localhost/harkd:test"
    args = ["build", "--isolation", "chroot", "--format", "docker",
            "--build-arg", f"PYTHON_IMAGE={BASE}", "-t", tag, "-f", "Containerfile"]
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():  # a TLS-intercepting proxy in front of PyPI
        args += ["-v", f"{ca}:/run/ca.crt:ro", "--build-arg", "PIP_CERT=/run/ca.crt"]
    _podman(*args, str(ROOT))
    yield tag


def test_image_serves_reports_health_and_stops_cleanly(image: str, tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "echo.yaml").write_text("trigger: {http: {auth: none}}\n"
                                         "steps: [{template: 'hi from the image'}]\n")
    tmp_path.chmod(0o755)
    pipelines.chmod(0o755)
    port = free_port()
    name = f"harkd-test-{port}"
    # Lowered limits: a runtime without CAP_SYS_RESOURCE cannot raise them.
    _podman("run", "-d", "--name", name, "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024", "-p", f"127.0.0.1:{port}:8420",
            "-e", "HARKD_TOKEN=test-token",
            "-v", f"{pipelines}:/etc/harkd/pipelines:ro", image)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/echo", b"{}")
                with urllib.request.urlopen(req, timeout=2) as r:
                    assert r.read() == b"hi from the image"
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert _podman("exec", name, "harkd", "health").endswith("/healthz ok")
        assert _podman("exec", name, "id", "-u") != "0"
        assert _podman("exec", name, "cat", "/var/lib/harkd/VERSION") == "1"
        inspect = json.loads(_podman("image", "inspect", image))[0]
        check = inspect.get("Healthcheck") or inspect["Config"]["Healthcheck"]
        assert check["Test"] == ["CMD", "harkd", "health", "--quiet"]
        _podman("stop", "-t", "40", name)
        assert _podman("inspect", name, "--format", "{{.State.ExitCode}}") == "0"
        assert "daemon_stopped" in _podman("logs", name, stderr=True)
    finally:
        _podman("rm", "-f", name, check=False)
