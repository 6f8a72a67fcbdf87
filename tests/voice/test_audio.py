"""Frames, resampling, endpointing, sentence cutting and wake matching on real audio."""

from __future__ import annotations

import numpy as np
import pytest

from harkd.voice.frames import (
    FRAME_BYTES,
    Audio,
    Framer,
    Resampler,
    convert,
    from_pcm,
    normalise,
    read_wav,
    resample,
    rms,
    to_mono,
    to_pcm,
)
from harkd.voice.tts import sentences
from harkd.voice.vad import Endpointer, VadConfig
from harkd.voice.wake import WakeConfig, WakeSpotter

from .conftest import Models, Speak

pytestmark = pytest.mark.anyio


def tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_downmix_and_resample_keep_pitch_and_length() -> None:
    stereo = np.stack([tone(440, 48000, 1.0), tone(440, 48000, 1.0)], axis=1)
    pcm = to_pcm(stereo.reshape(-1))
    out = from_pcm(convert(pcm, 48000, channels=2))
    assert out.size == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 2
    assert to_mono(np.array([[1000, -1000]], dtype=np.int16), 2).tolist() == [0.0]


def test_streaming_resampler_matches_offline() -> None:
    signal = tone(300, 22050, 0.5)
    pcm = to_pcm(signal)
    r = Resampler(22050)
    streamed = b"".join(r.push(pcm[i:i + 882]) for i in range(0, len(pcm), 882))
    offline = to_pcm(resample(signal, 22050))
    n = min(len(streamed), len(offline)) // 2
    a, b = from_pcm(streamed)[:n], from_pcm(offline)[:n]
    assert n > 7900
    assert float(np.max(np.abs(a - b))) < 0.05


def test_framer_cuts_20ms_frames_and_keeps_the_rest() -> None:
    f = Framer()
    assert f.push(b"\1" * (FRAME_BYTES + 100)) == [b"\1" * FRAME_BYTES]
    assert len(f.push(b"\1" * (FRAME_BYTES - 100))) == 1


def test_normalise_lifts_a_quiet_signal() -> None:
    quiet = tone(200, 16000, 0.1) * 0.01
    gain = rms(to_pcm(normalise(quiet))) / rms(to_pcm(quiet))
    assert 19 < gain < 21  # capped at max_gain: noise is not blown up to full scale
    loud = tone(200, 16000, 0.1)
    assert float(np.max(np.abs(normalise(loud)))) == pytest.approx(0.9, abs=0.01)


def frames_of(audio: Audio) -> list[bytes]:
    return Framer().push(audio.pcm)


def test_endpointer_finds_one_utterance_with_pre_roll(speak: Speak) -> None:
    audio = read_wav(speak("turn on the kitchen lights", pad=1.0))
    ep = Endpointer(VadConfig(silence=0.5, pre_roll=0.3))
    utts = [u for f in frames_of(audio) if (u := ep.push(f)) is not None]
    assert len(utts) == 1
    trace = utts[0].trace
    assert trace.rule == "silence"
    assert 0.8 <= trace.speech_start <= 1.3
    assert trace.pre_roll == pytest.approx(0.3, abs=0.021)
    assert trace.waited >= 0.5
    assert trace.speech_end > trace.speech_start
    assert 1.0 < utts[0].seconds < audio.seconds  # lengths of audio, not clock time


def test_endpointer_cuts_at_max_utterance_and_ignores_silence(speak: Speak) -> None:
    audio = read_wav(speak("this is a rather long sentence that keeps going on and on",
                           pad=0.5))
    ep = Endpointer(VadConfig(max_utterance=1.0))
    utts = [u for f in frames_of(audio) if (u := ep.push(f)) is not None]
    assert utts and utts[0].trace.rule == "max_utterance"
    assert utts[0].trace.duration == pytest.approx(1.0, abs=0.05)
    quiet = Endpointer(VadConfig())
    assert all(quiet.push(b"\0" * FRAME_BYTES) is None for _ in range(200))
    assert quiet.stop() is None


def test_floor_hides_quiet_speech(speak: Speak) -> None:
    audio = read_wav(speak("turn on the kitchen lights"))
    ep = Endpointer(VadConfig())
    assert all(ep.push(f, floor=0.9) is None for f in frames_of(audio))
    assert not ep.in_speech


async def test_sentences_are_cut_as_they_complete() -> None:
    async def chunks():
        for c in ["Hello the", "re. How are", " you? Fine", "\nbye"]:
            yield c

    assert [s async for s in sentences(chunks())] == ["Hello there.", "How are you?",
                                                        "Fine", "bye"]


@pytest.mark.parametrize(("heard", "rest"), [
    ("Hey Hark, turn on the lights.", "turn on the lights."),
    ("hey hark", ""),
    ("Okay, hey, Hark! What time is it?", "What time is it?"),
    ("Hey Mark, what's up", "what's up"),
])
def test_wake_phrase_matches_at_the_start(heard: str, rest: str) -> None:
    m = WakeSpotter(WakeConfig("hey hark", sensitivity=0.5)).match(heard)
    assert m is not None and m.rest == rest


@pytest.mark.parametrize("heard", ["turn on the lights", "what is the weather", "",
                                   "I heard a hark in the park"])
def test_wake_phrase_rejects_other_speech(heard: str) -> None:
    assert WakeSpotter(WakeConfig("hey hark")).match(heard) is None


def test_strict_sensitivity_rejects_near_misses() -> None:
    assert WakeSpotter(WakeConfig("hey hark", sensitivity=0.0)).match("hey mark") is None


def test_whisper_hears_generated_speech(models: Models, speak: Speak) -> None:
    text = models.transcribe(read_wav(speak("turn on the kitchen lights")))
    assert "kitchen lights" in text.lower()
