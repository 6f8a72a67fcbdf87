"""Noise suppression and automatic gain on incoming audio, with WebRTC's processor.

``webrtc-noise-gain`` wraps the noise suppressor and the digital AGC of WebRTC's audio
processing module (the C++ library ships in its wheel). It works on 10 ms chunks of 16 kHz
mono s16le, so each 20 ms frame is two calls. It does not cancel echo: that is
:mod:`harkd.voice.echo`, which runs before it, as in WebRTC's own chain.
"""

from __future__ import annotations

from ..records import dataclass
from .frames import FRAME_BYTES


@dataclass(frozen=True)
class CleanConfig:
    """The ``clean:`` options: ``noise_suppression`` 0 (off) to 4 (strongest) and
    ``auto_gain``, the AGC's target level in dB below full scale (0: off, 1 to 31)."""

    noise_suppression: int = 0
    auto_gain: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.noise_suppression <= 4:
            raise ValueError("noise_suppression must be 0 to 4")
        if not 0 <= self.auto_gain <= 31:
            raise ValueError("auto_gain must be 0 (off) to 31 dBFS")

    @property
    def enabled(self) -> bool:
        return bool(self.noise_suppression or self.auto_gain)


class Cleaner:
    """One stream's processor (it adapts to the noise it hears: one per mic or client)."""

    def __init__(self, config: CleanConfig) -> None:
        from webrtc_noise_gain import AudioProcessor

        self.config = config
        self._processor = AudioProcessor(config.auto_gain, config.noise_suppression)

    def __call__(self, frame: bytes) -> bytes:
        """One 20 ms frame of the internal format, cleaned."""
        if len(frame) != FRAME_BYTES:
            return frame
        half = FRAME_BYTES // 2
        first = self._processor.Process10ms(frame[:half]).audio
        second = self._processor.Process10ms(frame[half:]).audio
        return bytes(first) + bytes(second)
