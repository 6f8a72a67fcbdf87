"""A real ``wyoming-satellite`` for tests and benches, with a scripted microphone and a
speaker that records.

:func:`run_satellite` starts ``python -m wyoming_satellite`` (from the ``.venv/satellite``
that ``scripts/setup`` makes, since it pins an older ``wyoming``) on a free loopback port.
Its ``--mic-command`` is this file's ``mic`` mode: it writes silence at real-time pace and
plays each raw 16 kHz s16le file dropped into its queue folder (:meth:`Satellite.say`),
logging the wall time at which the last chunk of speech left it. Its ``--snd-command`` is
the ``snd`` mode, which the satellite starts for each reply: it writes the reply's PCM to
``replies/NNN.raw`` and the wall time of the first audio to ``replies/NNN.json``.

The two modes live in :mod:`harkd.satellite_io`, a script that imports almost nothing and
runs with ``python -S``, so that the satellite's speaker starts about as fast as a real
one (``aplay``) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from .records import dataclass

SND_RATE = 22050
IO_SCRIPT = Path(__file__).with_name("satellite_io.py")


@dataclass
class Satellite:
    """A running wyoming-satellite with a scripted microphone and a recording speaker."""

    folder: Path
    port: int
    process: asyncio.subprocess.Process

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def queue(self) -> Path:
        return self.folder / "mic"

    @property
    def replies_folder(self) -> Path:
        return self.folder / "replies"

    def say(self, pcm: bytes, name: str = "") -> None:
        """Play 16 kHz s16le speech into the satellite's microphone (queued)."""
        name = name or f"{time.monotonic_ns()}"
        tmp = self.queue / f"{name}.tmp"
        tmp.write_bytes(pcm)
        tmp.rename(tmp.with_suffix(".raw"))

    def spoken(self) -> list[dict[str, float]]:
        """When each utterance's speech ended at the microphone (wall clock)."""
        log = self.folder / "mic.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    def replies(self) -> list[tuple[dict[str, float], bytes]]:
        """Each complete reply the speaker got: its timing and its 22,050 Hz PCM."""
        out = []
        for meta in sorted(self.replies_folder.glob("*.json")):
            out.append((json.loads(meta.read_text()), meta.with_suffix(".raw").read_bytes()))
        return out


def satellite_python() -> Path:
    """The interpreter of the satellite's own venv (``HARKD_SATELLITE_PYTHON`` wins)."""
    explicit = os.environ.get("HARKD_SATELLITE_PYTHON")
    if explicit:
        return Path(explicit)
    return Path(sys.prefix) / "satellite" / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def run_satellite(folder: Path, name: str = "Kitchen",
                        port: int | None = None) -> AsyncIterator[Satellite]:
    """Start a wyoming-satellite that listens on a free loopback port; stop it at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mic").mkdir(exist_ok=True)
    port = port or _free_port()
    me = [sys.executable, "-S", str(IO_SCRIPT)]
    mic = [*me, "mic", str(folder / "mic"), str(folder / "mic.log")]
    snd = [*me, "snd", str(folder / "replies")]
    import shlex

    log = (folder / "satellite.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        str(satellite_python()), "-m", "wyoming_satellite", "--uri",
        f"tcp://127.0.0.1:{port}", "--name", name, "--no-zeroconf",
        "--mic-command", shlex.join(mic), "--snd-command", shlex.join(snd),
        "--snd-command-rate", str(SND_RATE), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("wyoming-satellite did not start; see "
                                       f"{folder / 'satellite.log'}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield Satellite(folder, port, process)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
