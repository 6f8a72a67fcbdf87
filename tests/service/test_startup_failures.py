"""A daemon that cannot start says why in one line and exits with a sysexits code."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harkd import state
from harkd.testing import Spawned, free_port, spawn_daemon

ECHO = "trigger: {http: {}}\nsteps: [{template: hi}]\n"


def _fails(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    with spawn_daemon(tmp_path, {"echo": ECHO}, args=args, env=env, ready=False) as d:
        code = d.wait(60)
        return code, _lines(d)


def _lines(d: Spawned) -> str:
    lines = [line for line in d.output().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_port_in_use_exits_69(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, line = _fails(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert code == 69
    assert line == f"harkd: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_pipelines_path_that_is_not_a_folder_exits_66(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    code, line = _fails(tmp_path, "--pipelines", str(tmp_path / "afile" / "pipelines"))
    assert code == 66
    assert line.startswith(f"harkd: cannot read pipelines folder {tmp_path}/afile/pipelines")
    assert line.endswith("Not a directory")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_unreadable_pipelines_folder_exits_66(tmp_path: Path) -> None:
    # Root reads every folder; without CAP_DAC_OVERRIDE it is held to the mode bits, like
    # the unprivileged user systemd runs harkd as.
    folder = tmp_path / "pipelines"
    folder.mkdir()
    folder.chmod(0)
    cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
           sys.executable, "-m", "harkd", "run", "--pipelines", str(folder),
           "--listen", f"127.0.0.1:{free_port()}", "--state", str(tmp_path / "state")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    folder.chmod(0o700)
    if proc.stderr.startswith("setpriv:"):
        pytest.skip("cannot drop capabilities here")
    assert proc.returncode == 66, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"harkd: cannot read pipelines folder {folder}: Permission denied"]


def test_bad_config_exits_78_naming_the_position(tmp_path: Path) -> None:
    config = tmp_path / "harkd.yaml"
    config.write_text("server:\n  listen: 127.0.0.1:8420\n  shutdown_timeout: soon\n")
    code, line = _fails(tmp_path, "--config", str(config))
    assert code == 78
    assert line.startswith(f"{config}:3:21: ")
    assert "shutdown_timeout" in line


def test_off_loopback_without_token_exits_78(tmp_path: Path) -> None:
    code, line = _fails(tmp_path, "--listen", f"0.0.0.0:{free_port()}",
                        env={"HARKD_TOKEN": ""})
    assert code == 78
    assert line.startswith("harkd: refusing to listen on 0.0.0.0:")
    assert "without server.token" in line


def test_state_from_a_newer_harkd_exits_73(tmp_path: Path) -> None:
    newer = tmp_path / "state"
    newer.mkdir()
    (newer / state.VERSION_FILE).write_text(f"{state.SCHEMA_VERSION + 1}\n")
    code, line = _fails(tmp_path, "--state", str(newer))
    assert code == 73
    assert line.startswith(f"harkd: state folder {newer} has schema version "
                           f"{state.SCHEMA_VERSION + 1}, newer than this harkd supports")
