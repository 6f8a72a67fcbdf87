"""A real ``wyoming-satellite`` for tests and benches, with a scripted microphone and a
speaker that records.

:func:`run_satellite` starts ``python -m wyoming_satellite`` (from the ``.venv/satellite``
that ``scripts/setup`` makes, since it pins an older ``wyoming``) on a free loopback port.
Its ``--mic-command`` is this file's ``mic`` mode: it writes silence at real-time pace and
plays each raw 16 kHz s16le file dropped into its queue folder (:meth:`Satellite.say`),
logging the wall time at which the last chunk of speech left it. Its ``--snd-command`` is
the ``snd`` mode, which the satellite starts for each reply: it writes the reply's PCM to
``replies/NNN.raw`` and the wall time of the first audio to ``replies/NNN.json``.

The two modes use only the standard library and run with ``python -S`` so that the
satellite's speaker starts as fast as a real one (``aplay``) would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_SAMPLES = 1024
MIC_RATE = 16000
SND_RATE = 22050


def _mic(queue: Path, log: Path, rate: int, samples: int) -> None:
    out = sys.stdout.buffer
    size = samples * 2
    chunk_seconds = samples / rate
    pending = b""
    current = ""
    t0 = time.monotonic()
    n = 0
    while True:
        if not pending:
            ready = sorted(p for p in queue.glob("*.raw"))
            if ready:
                pending = ready[0].read_bytes()
                current = ready[0].stem
                ready[0].unlink()
        block, pending = (pending[:size], pending[size:]) if pending else (b"", b"")
        last = bool(block) and not pending
        block = block.ljust(size, b"\0")
        n += 1
        # A real microphone hands over a chunk once it has been heard: at its end.
        delay = t0 + n * chunk_seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            out.write(block)
            out.flush()
        except BrokenPipeError:
            return
        if last:
            with log.open("a") as f:
                f.write(json.dumps({"utterance": current, "end": time.time()}) + "\n")


def _snd(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("*.json"))) + len(list(folder.glob("*.part")))
    name = f"{number:03d}"
    marker = folder / f"{name}.part"
    marker.write_text("")
    first = None
    size = 0
    with (folder / f"{name}.raw").open("wb") as f:
        while chunk := os.read(0, 65536):
            if first is None:
                first = time.time()
            f.write(chunk)
            f.flush()
            size += len(chunk)
    (folder / f"{name}.json").write_text(json.dumps({"first": first, "end": time.time(),
                                                     "bytes": size, "rate": SND_RATE}))
    marker.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    mic = sub.add_parser("mic")
    mic.add_argument("--queue", type=Path, required=True)
    mic.add_argument("--log", type=Path, required=True)
    mic.add_argument("--rate", type=int, default=MIC_RATE)
    mic.add_argument("--samples", type=int, default=CHUNK_SAMPLES)
    snd = sub.add_parser("snd")
    snd.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mode == "mic":
        _mic(args.queue, args.log, args.rate, args.samples)
    else:
        _snd(args.out)


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
    me = [sys.executable, "-S", str(Path(__file__).resolve())]
    mic = [*me, "mic", "--queue", str(folder / "mic"), "--log", str(folder / "mic.log")]
    snd = [*me, "snd", "--out", str(folder / "replies")]
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
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


if __name__ == "__main__":
    main()
