"""CPU use of an idle, always-listening mic pipeline (capture + VAD on silence).

    .venv/bin/python bench/mic_idle_cpu.py [--seconds 30] [--mode always|wake]
        [--engine whisper|microwakeword] [--clean]

Starts a user-mode PulseAudio with a null sink, a daemon with one mic pipeline on its
monitor, waits for the mic to open and Whisper to load, then measures this process's CPU
time over the window: harkd's capture thread, framing and webrtcvad all run in it.
``--engine microwakeword`` (with ``--mode wake``) runs the trained wake-word model on every
frame; ``--clean`` adds noise suppression and automatic gain (``clean: {noise_suppression:
2, auto_gain: 3}``) before VAD.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

PIPELINE = """\
trigger: {mic: {device: pulse, mode: MODE, wake: WAKE, clean: CLEAN}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
"""


async def measure(seconds: float, mode: str, engine: str, clean: bool) -> None:
    from harkd.testing import run_daemon, wait_until

    async with run_daemon(Path(tempfile.mkdtemp())) as d:
        wake = ("{engine: microwakeword, phrase: okay nabu}" if engine == "microwakeword"
                else "hey hark")
        cleaning = "{noise_suppression: 2, auto_gain: 3}" if clean else "{}"
        await d.write("idle", PIPELINE.replace("MODE", mode).replace("WAKE", wake)
                      .replace("CLEAN", cleaning))
        await wait_until(lambda: d.state("idle") == "active", 30)
        await wait_until(lambda: any(k.startswith("voice.whisper")
                                     for k in d.daemon.services.shared), 60)
        await asyncio.sleep(2.0)
        c0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - c0, time.monotonic() - t0
    what = f"{mode}, {engine}" + (", clean" if clean else "")
    print(f"idle mic pipeline ({what}): {100 * cpu / wall:.2f}% of one core "
          f"({cpu:.2f}s CPU in {wall:.1f}s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--mode", default="always", choices=["always", "wake"])
    ap.add_argument("--engine", default="whisper", choices=["whisper", "microwakeword"])
    ap.add_argument("--clean", action="store_true")
    args = ap.parse_args()
    runtime = tempfile.mkdtemp(prefix="harkd-bench-pulse-")
    os.environ.update(XDG_RUNTIME_DIR=runtime, PULSE_SERVER=f"unix:{runtime}/pulse/native")
    subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disable-shm=yes",
                    "-L", "module-null-sink sink_name=bench rate=16000 channels=1",
                    "-L", "module-native-protocol-unix"], check=True)
    try:
        time.sleep(1.0)
        asyncio.run(measure(args.seconds, args.mode, args.engine, args.clean))
    finally:
        subprocess.run(["pulseaudio", "--kill"], check=False)


if __name__ == "__main__":
    main()
