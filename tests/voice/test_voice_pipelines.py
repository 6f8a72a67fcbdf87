"""The shipped voice pipelines validate, and checking them imports no speech library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "webrtcvad", "sounddevice", "faster_whisper", "piper", "ctranslate2",
         "onnxruntime")


@pytest.mark.parametrize("name", ["assistant", "voice-ws"])
def test_shipped_voice_pipeline_checks_without_heavy_imports(name: str) -> None:
    code = (
        "import sys\n"
        "from harkd.check import check\n"
        f"report = check([{str(ROOT / 'pipelines' / (name + '.yaml'))!r}])\n"
        "print(report)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout


def test_bad_mic_options_are_reported_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trigger:\n  mic: {mode: wake, vad: {aggressiveness: 7}}\n"
                   "steps:\n  - stt: {}\n")
    done = subprocess.run([sys.executable, "-m", "harkd", "check", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 78
    assert "bad.yaml:2:" in done.stdout + done.stderr
