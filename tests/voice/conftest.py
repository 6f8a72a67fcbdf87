"""Voice test fixtures: speech models loaded once per session, generated speech, and a
user-mode PulseAudio server with a null sink whose monitor is the microphone."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harkd.voice.frames import Audio, from_pcm, normalise, read_wav, to_pcm, write_wav
from harkd.voice.models import tts_key, whisper_key
from harkd.voice.stt import Whisper
from harkd.voice.tts import EspeakTTS, PiperTTS


@dataclass
class Models:
    """The speech models every voice test shares."""

    whisper: Whisper
    piper: PiperTTS
    espeak: EspeakTTS

    def shared(self) -> dict[str, Any]:
        """Entries for ``Services.shared`` so a test daemon does not load its own."""
        return {whisper_key(): self.whisper, tts_key("piper"): self.piper,
                tts_key("espeak"): self.espeak}

    def transcribe(self, audio: Audio) -> str:
        from harkd.voice.frames import from_pcm, resample

        samples = from_pcm(audio.pcm)
        if audio.rate != 16000:
            samples = resample(samples, audio.rate)
        return self.whisper.transcribe(samples).text


@pytest.fixture(scope="session")
def models() -> Models:
    # Piper without its random noise: the same reply sounds the same in every run, so an
    # assertion on what Whisper hears back cannot pass once and fail the next time.
    return Models(Whisper.load(), PiperTTS(noise=0.0), EspeakTTS())


Speak = Callable[..., Path]


@pytest.fixture(scope="session")
def speak(tmp_path_factory: pytest.TempPathFactory, models: Models) -> Speak:
    """``speak("text", engine="espeak", pad=0.5)`` → a WAV of the text, generated now,
    with ``pad`` seconds of silence before and after (for VAD to find the edges)."""
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple[str, str, float, int], Path] = {}

    def make(text: str, engine: str = "espeak", pad: float = 0.5, rate: int = 16000) -> Path:
        key = (text, engine, pad, rate)
        if key in cache:
            return cache[key]
        raw = folder / f"raw{len(cache)}.wav"
        if engine == "espeak":
            subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        else:
            write_wav(raw, models.piper.synthesize(text))
        audio = read_wav(raw)
        audio = Audio(to_pcm(normalise(from_pcm(audio.pcm))))
        silence = b"\0" * (int(pad * 16000) * 2)
        out = folder / f"speech{len(cache)}.wav"
        padded = Audio(silence + audio.pcm + silence)
        if rate != 16000:
            from harkd.voice.frames import resample

            padded = Audio(to_pcm(resample(from_pcm(padded.pcm), 16000, rate)), rate)
        write_wav(out, padded)
        cache[key] = out
        return out

    return make


@dataclass
class Pulse:
    """A running user-mode PulseAudio with the null sink ``harkd_test`` as default sink
    and its monitor as default source, reached through PortAudio's ``pulse`` device."""

    runtime: Path
    env: dict[str, str]
    proc_args: list[str]

    def play(self, wav: Path, volume: float = 1.0) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["paplay", f"--volume={int(65536 * volume)}", str(wav)],
                                env=self.env)

    async def record(self, out: Path) -> Recording:
        """Record the sink's monitor into ``out`` (16 kHz mono WAV) until
        :meth:`Recording.stop`; it returns once the monitor delivers audio.

        The null sink renders ahead of time by its latency, 2 s while no stream asks for
        less, and can rewind only as much as its latency is now. A stream that starts
        playing then is rendered into that little and rewound away again when it stops:
        the monitor carries none of it (parecord's default 2 s latency recorded a whole
        1 s tone from DeviceOut as silence). Asking for 20 ms, well under a player's own
        (62.5 ms for DeviceOut), keeps the sink rendering in real time while this
        records; waiting for the first audio waits out what it had rendered ahead."""
        proc = subprocess.Popen(["parecord", "--device=harkd_test.monitor", "--rate=16000",
                                 "--channels=1", "--format=s16le", "--file-format=wav",
                                 "--latency-msec=20", str(out)], env=self.env)
        deadline = time.monotonic() + 10
        # the WAV header, then 0.1 s of audio
        while not out.exists() or out.stat().st_size < 44 + 3200:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("parecord recorded nothing from the monitor")
            await asyncio.sleep(0.01)
        return Recording(proc, out)

    def start(self) -> None:
        subprocess.run(self.proc_args, env=self.env, check=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=self.env,
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("pulseaudio did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=self.env,
                             capture_output=True).returncode == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("pulseaudio did not stop")
            time.sleep(0.05)


@dataclass
class Recording:
    """A ``parecord`` of the sink's monitor, from :meth:`Pulse.record`."""

    proc: subprocess.Popen[bytes]
    path: Path

    def stop(self) -> Audio:
        """What the monitor delivered until now: give the last sound played a moment to
        come through it first."""
        self.proc.send_signal(signal.SIGINT)  # parecord then closes the file properly
        self.proc.wait(timeout=10)
        return read_wav(self.path)


@pytest.fixture(scope="session")
def pulse() -> Iterator[Pulse]:
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("pulseaudio and pulseaudio-utils are not installed")
    runtime = Path(tempfile.mkdtemp(prefix="harkd-pulse-"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime),
           "PULSE_SERVER": f"unix:{runtime}/pulse/native"}
    args = ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disable-shm=yes",
            "--log-target=file:" + str(runtime / "pulse.log"),
            "-L", "module-null-sink sink_name=harkd_test rate=16000 channels=1",
            "-L", "module-native-protocol-unix"]
    p = Pulse(runtime, env, args)
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    os.environ.update({k: env[k] for k in saved})
    p.start()
    try:
        yield p
    finally:
        p.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(runtime, ignore_errors=True)
