"""The systemd units: `systemd-analyze verify` and `security` when present, static checks
always."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
HARKD = Path(sys.executable).parent / "harkd"
#: the exposure `systemd-analyze security` gave (1.1 on systemd 252); fail on regressions
MAX_EXPOSURE = 1.5


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


SERVICE = directives((UNITS / "harkd.service").read_text())


def test_service_is_type_notify_with_sighup_reload_and_a_check_first() -> None:
    assert SERVICE["Type"] == ["notify"]
    assert SERVICE["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert SERVICE["ExecStartPre"] == ["/opt/harkd/bin/harkd check"]
    assert SERVICE["ExecStart"] == ["/opt/harkd/bin/harkd run"]
    assert SERVICE["WatchdogSec"] == ["30s"]
    assert "78" in SERVICE["RestartPreventExitStatus"][0].split()


def test_service_hardening() -> None:
    want = {"DynamicUser": "yes", "StateDirectory": "harkd", "ConfigurationDirectory": "harkd",
            "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
            "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "PrivateDevices": "yes"}
    for key, value in want.items():
        assert SERVICE[key] == [value], key
    assert "@system-service" in SERVICE["SystemCallFilter"]
    # Sound devices are opened only by the microphone drop-in.
    assert "DeviceAllow" not in SERVICE and "SupplementaryGroups" not in SERVICE


def test_stop_timeout_outlasts_the_shutdown_timeout() -> None:
    from harkd.durations import seconds
    from harkd.settings import BY_KEY

    assert seconds(SERVICE["TimeoutStopSec"][0]) > seconds(
        BY_KEY["server.shutdown_timeout"].default)


def test_dropins() -> None:
    mic = directives((UNITS / "microphone.conf").read_text())
    assert mic["SupplementaryGroups"] == ["audio"]
    assert mic["DeviceAllow"] == ["char-alsa rw"]
    assert mic["PrivateDevices"] == ["no"]
    reload = directives((UNITS / "notify-reload.conf").read_text())
    assert reload["Type"] == ["notify-reload"]
    assert reload["ExecReload"] == [""]  # clears the kill of the base unit
    assert reload["ReloadSignal"] == ["SIGHUP"]


def _installed(tmp_path: Path, dropins: tuple[str, ...] = ()) -> Path:
    """The unit as installed, pointing at this checkout's harkd (verify wants binaries)."""
    unit = tmp_path / "harkd.service"
    unit.write_text((UNITS / "harkd.service").read_text()
                    .replace("/opt/harkd/bin/harkd", str(HARKD)))
    if dropins:
        d = tmp_path / "harkd.service.d"
        d.mkdir()
        for name in dropins:
            shutil.copy(UNITS / name, d / name)
    return unit


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_analyze
@pytest.mark.parametrize("dropins", [(), ("microphone.conf",)])
def test_systemd_analyze_verify(tmp_path: Path, dropins: tuple[str, ...]) -> None:
    unit = _installed(tmp_path, dropins)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    complaints = [line for line in proc.stderr.splitlines() if "harkd.service" in line]
    assert complaints == []


@needs_analyze
def test_systemd_analyze_security_score(tmp_path: Path) -> None:
    unit = _installed(tmp_path)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    match = re.search(r"Overall exposure level for harkd.service: ([0-9.]+)", proc.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline is not supported: {proc.stderr}")
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
