"""The one internal audio format and conversions into it.

Inside harkd audio is 16 kHz, 16-bit, mono PCM, cut into 20 ms frames (320 samples, 640
bytes): the rate Whisper expects and a frame size webrtcvad accepts. Whatever a device or a
client gives is down-mixed, resampled and sliced here with numpy.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ..records import dataclass

RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2

Int16 = npt.NDArray[np.int16]
Float32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Audio:
    """A piece of mono s16le PCM at ``rate`` Hz (a synthesized sentence, an utterance)."""

    pcm: bytes
    rate: int = RATE

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate

    def samples(self) -> Int16:
        return np.frombuffer(self.pcm, dtype=np.int16)

    def to_wav(self) -> bytes:
        """The audio as a WAV file (RIFF, 16-bit mono)."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(self.pcm)
        return buf.getvalue()

    def as_value(self) -> dict[str, Any]:
        """What the run log and JSON answers show instead of the samples."""
        return {"type": "audio", "seconds": round(self.seconds, 3), "rate": self.rate,
                "format": "s16le"}

    def __repr__(self) -> str:
        return f"<audio {self.seconds:.2f}s {self.rate}Hz>"


@dataclass(frozen=True, repr=False)
class Spoken(Audio):
    """Synthesized speech as a value: the audio of ``text`` (the output of a ``tts`` step
    that ends a pipeline with no client to speak to, such as a webhook)."""

    text: str = ""
    engine: str = ""

    def as_value(self) -> dict[str, Any]:
        return {**super().as_value(), "type": "speech", "text": self.text,
                "engine": self.engine}


def to_mono(samples: npt.NDArray[np.generic], channels: int) -> Float32:
    """Interleaved or (frames, channels) samples of any dtype → float32 mono in [-1, 1]."""
    data = np.asarray(samples)
    if data.dtype == np.int16:
        f = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        f = data.astype(np.float32) / 2147483648.0
    elif data.dtype == np.uint8:
        f = (data.astype(np.float32) - 128.0) / 128.0
    else:
        f = data.astype(np.float32)
    if channels > 1:
        f = f.reshape(-1, channels).mean(axis=1)
    return f.reshape(-1)


def resample(samples: Float32, src: int, dst: int = RATE) -> Float32:
    """Resample mono float audio by linear interpolation.

    Linear interpolation is enough for speech going into VAD and Whisper (both look below
    8 kHz); when down-sampling, a box filter over the ratio first keeps aliasing down.
    """
    if src == dst or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    if src > dst:
        width = int(src // dst)
        if width > 1:
            kernel = np.ones(width, dtype=np.float32) / width
            samples = np.convolve(samples, kernel, mode="same").astype(np.float32)
    n_out = round(samples.size * dst / src)
    t = np.arange(n_out, dtype=np.float64) * (src / dst)
    return np.interp(t, np.arange(samples.size), samples).astype(np.float32)


def to_pcm(samples: Float32) -> bytes:
    """Float mono in [-1, 1] → s16le bytes (clipped)."""
    clipped = np.clip(samples, -1.0, 1.0) * 32767.0
    return clipped.astype("<i2").tobytes()


def from_pcm(pcm: bytes) -> Float32:
    """s16le bytes → float32 mono in [-1, 1]."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def normalise(samples: Float32, peak: float = 0.9, max_gain: float = 20.0) -> Float32:
    """Scale so the loudest sample reaches ``peak``, at most by ``max_gain`` (quiet mics)."""
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    if top <= 1e-6:
        return samples
    gain = min(peak / top, max_gain)
    return (samples * gain).astype(np.float32)


def rms(pcm: bytes) -> float:
    """Root mean square level of s16le PCM, 0..1."""
    if not pcm:
        return 0.0
    f = from_pcm(pcm)
    return float(np.sqrt(np.mean(f * f)))


def convert(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """s16le PCM at any rate and channel count → the internal format."""
    data = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * channels)], dtype="<i2")
    return to_pcm(resample(to_mono(data, channels), rate))


class Framer:
    """Cuts a byte stream of internal-format PCM into whole 20 ms frames.

    Clients and devices deliver blocks of any size; the remainder waits for the next block.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> float:
        """Seconds of audio waiting for the rest of their frame."""
        return len(self._buf) / 2 / RATE

    def push(self, pcm: bytes) -> list[bytes]:
        self._buf += pcm
        n = len(self._buf) // FRAME_BYTES
        frames = [bytes(self._buf[i * FRAME_BYTES:(i + 1) * FRAME_BYTES]) for i in range(n)]
        del self._buf[: n * FRAME_BYTES]
        return frames


class Resampler:
    """Converts a stream of s16le blocks at ``rate`` to the internal format, block by block.

    Linear interpolation per block would click at block edges, so the input is kept as a
    running float position across blocks.
    """

    def __init__(self, rate: int, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self._pos = 0.0
        self._tail: Float32 = np.zeros(0, dtype=np.float32)

    def push(self, pcm: bytes) -> bytes:
        if self.rate == RATE and self.channels == 1:
            return pcm  # already the internal format: the idle mic path stays numpy-free
        usable = len(pcm) - len(pcm) % (2 * self.channels)
        mono = to_mono(np.frombuffer(pcm[:usable], dtype="<i2"), self.channels)
        if self.rate == RATE:
            return to_pcm(mono)
        data = np.concatenate([self._tail, mono])
        step = self.rate / RATE
        t = np.arange(self._pos, data.size - 1, step)
        out = np.interp(t, np.arange(data.size), data).astype(np.float32)
        nxt = self._pos + step * t.size
        keep = int(nxt)
        self._tail = data[keep:]
        self._pos = nxt - keep
        return to_pcm(out)


def read_wav(source: str | Path | BinaryIO) -> Audio:
    """A WAV file (any rate, 8/16/32-bit, any channels) in the internal format."""
    with wave.open(source if not isinstance(source, str | Path) else str(source), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    data: npt.NDArray[np.generic]
    if width == 1:
        data = np.frombuffer(raw, dtype=np.uint8)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4")
    else:
        data = np.frombuffer(raw, dtype="<i2")
    return Audio(to_pcm(resample(to_mono(data, channels), rate)))


def write_wav(path: str | Path, audio: Audio) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.rate)
        w.writeframes(audio.pcm)
