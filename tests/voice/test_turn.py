"""End of turn: a mid-phrase pause does not end the turn, a finished sentence ends it at
the first short pause, and a speculative reply is discarded when the user goes on.

Speech is espeak-ng's, with SSML breaks for the pauses (a fragment spoken on its own
would fall in pitch like a finished sentence); a real daemon serves WebSocket audio.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import capture_logs, run_daemon, wait_until
from harkd.voice.frames import Audio, from_pcm, normalise, read_wav, to_pcm
from harkd.voice.tts import sentences
from harkd.voice.turn import SmartTurn, sounds_complete

from .conftest import Models
from .test_wsaudio import events, receive, send_pcm

pytestmark = pytest.mark.anyio

PIPE = """\
trigger: {websocket: {mode: audio, audio: {vad: VAD}}}
steps:
  - stt: {}
  - template: "You said {{ input }}"
  - tts: {engine: espeak}
  - play: {}
"""


def ssml(tmp_path: Path, text: str) -> Audio:
    """``text`` (SSML: ``<break time='600ms'/>`` pauses) by espeak-ng, normalised, after
    0.3 s of silence."""
    out = tmp_path / "ssml.wav"
    subprocess.run(["espeak-ng", "-m", "-w", str(out), text], check=True)
    return Audio(b"\0" * 9600 + to_pcm(normalise(from_pcm(read_wav(out).pcm))))


def silence(seconds: float) -> Audio:
    return Audio(b"\0" * int(seconds * 16000) * 2)


def at_pause(audio: Audio, pause: float = 0.45) -> tuple[Audio, Audio]:
    """``audio`` cut ``pause`` seconds into its first quiet stretch of 0.5 s or more."""
    samples = from_pcm(audio.pcm)
    quiet = abs(samples) < 0.01
    run, start = 0, 8000
    for i in range(start, samples.size):
        run = run + 1 if quiet[i] else 0
        if run == 8000:
            cut = 2 * (i - run + 1 + int(pause * 16000))
            return Audio(audio.pcm[:cut]), Audio(audio.pcm[cut:])
    raise AssertionError("no pause in the audio")


async def turn(tmp_path: Path, models: Models, vad: str, *parts: Audio | str, pipe: str = PIPE
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Send audio to a daemon's audio pipeline, then silence until its reply is over; the
    events, the logs, and the run's record. A string part waits (sending nothing, so the
    endpointer's clock stands still) until the daemon logs that event: the test does not
    depend on how fast the pass at a pause is on this machine."""
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("turn", pipe.replace("VAD", vad))
        with capture_logs() as logs:
            async with d.http.ws_connect(d.ws_url("/ws/turn")) as ws:
                log: list[Any] = []
                reader = asyncio.create_task(receive(ws, log))
                for part in parts:
                    if isinstance(part, str):
                        await wait_until(lambda p=part: any(  # type: ignore[misc]
                            e["event"] == p for e in logs), timeout=60)
                    else:
                        await send_pcm(ws, part)
                while not reader.done():
                    await ws.send_bytes(b"\0" * 640)
                    await asyncio.sleep(0.02)
        got = events(log)
        assert got[-1]["type"] == "result", got
        async with d.http.get(d.url(f"/api/runs/{got[-1]['run_id']}")) as resp:
            run = await resp.json()
    return got, list(logs), run


@pytest.mark.parametrize(("end", "first", "rest"), [
    ("smart-turn", "turn on the", "kitchen lights"),
    ("heuristic", "turn on the", "kitchen lights"),
    # Whisper tiny.en hears this fragment as "Remind me too."
    ("heuristic", "remind me to", "call mom"),
])
async def test_a_mid_phrase_pause_does_not_end_the_turn(
        tmp_path: Path, models: Models, end: str, first: str, rest: str) -> None:
    before, after = at_pause(ssml(tmp_path, f"{first} <break time='600ms'/> {rest}"))
    got, logs, run = await turn(tmp_path, models, f"{{end_of_turn: {end}}}",
                                before, "voice_turn_pass", after)
    transcripts = [e["text"] for e in got if e["type"] == "transcript"]
    assert len(transcripts) == 1, got
    heard = " ".join(transcripts[0].lower().replace(",", "").split())
    assert f"{first} {rest.split()[0]}" in heard, transcripts
    # the pass at the pause started a speculative reply, discarded when speech went on
    discarded = [e for e in logs if e["event"] == "voice_speculation_discarded"]
    assert len(discarded) == 1 and discarded[0]["reason"] == "resumed"
    assert rest.split()[0] not in discarded[0]["text"].lower()
    assert [e["type"] for e in got] == ["transcript", "audio", "audio_end", "result"], got
    assert run["steps"][-1]["detail"]["text"].lower().startswith(f"you said {first}")


async def test_a_complete_sentence_ends_at_the_first_pause(
        tmp_path: Path, models: Models) -> None:
    got, logs, run = await turn(tmp_path, models, "{end_of_turn: smart-turn}",
                                ssml(tmp_path, "turn on the kitchen lights"), silence(0.4),
                                "voice_turn_pass")
    assert [e["type"] for e in got] == ["transcript", "audio", "audio_end", "result"], got
    stt = run["steps"][0]["detail"]
    assert "kitchen lights" in stt["text"].lower()
    assert stt["turn"]["rule"] == "complete"  # ended by the check, not by the silence
    assert stt["from"] == "turn_pass"  # transcribed once, at the pause
    assert not [e for e in logs if e["event"] == "voice_speculation_discarded"]


async def test_fixed_silence_with_speculation_uses_the_speculative_reply(
        tmp_path: Path, models: Models) -> None:
    got, logs, run = await turn(tmp_path, models, "{end_of_turn: off, silence: 700ms}",
                                ssml(tmp_path, "what time is it"), silence(0.4),
                                "voice_speculation_started")
    assert [e["type"] for e in got] == ["transcript", "audio", "audio_end", "result"], got
    stt = run["steps"][0]["detail"]
    assert "what time is it" in stt["text"].lower()
    assert stt["turn"]["rule"] == "silence"  # the final trace replaced the pass's
    assert [e for e in logs if e["event"] == "voice_speculation_used"]
    assert "gate_ms" in run["steps"][-1]["detail"]  # the reply waited for the turn's end


async def test_a_speculative_text_reply_waits_for_the_end_of_the_turn(
        tmp_path: Path, models: Models) -> None:
    # No audio to hold back: the speculative run ends at once, and its result must still
    # wait for the turn (here the user goes on, so it is discarded, never sent).
    text_only = "\n".join(PIPE.splitlines()[:4]) + "\n"
    first, rest = at_pause(ssml(tmp_path, "turn on the <break time='600ms'/> kitchen lights"))
    got, logs, _ = await turn(tmp_path, models, "{end_of_turn: off, silence: 1s}",
                                first, "voice_speculation_started", rest, pipe=text_only)
    assert [e["type"] for e in got] == ["transcript", "result"], got
    assert "kitchen lights" in str(got[-1]["output"]).lower()
    assert [e for e in logs if e["event"] == "voice_speculation_discarded"]


async def test_a_pass_transcript_is_reused_when_only_silence_follows(
        tmp_path: Path, models: Models) -> None:
    first, _ = at_pause(ssml(tmp_path, "turn on the <break time='600ms'/> kitchen lights"))
    _, logs, run = await turn(
        tmp_path, models, "{end_of_turn: heuristic, speculate: false, silence: 800ms}",
        first, "voice_turn_pass")
    stt = run["steps"][0]["detail"]
    assert stt["turn"]["rule"] == "silence"  # "turn on the" is not a complete turn
    assert stt["from"] == "turn_pass" and "turn on" in stt["text"].lower()
    assert not [e for e in logs if e["event"].startswith("voice_speculation")]


async def test_without_speculation_the_old_fixed_silence_stands(
        tmp_path: Path, models: Models) -> None:
    _, logs, run = await turn(
        tmp_path, models, "{end_of_turn: off, speculate: false, silence: 500ms}",
        ssml(tmp_path, "what time is it"))
    stt = run["steps"][0]["detail"]
    assert "what time is it" in stt["text"].lower()
    assert stt["turn"]["rule"] == "silence" and "from" not in stt
    assert not [e for e in logs if e["event"].startswith("voice_speculation")]


async def test_a_pipeline_with_side_effects_is_not_run_speculatively(
        tmp_path: Path, models: Models) -> None:
    pipe = PIPE.replace("VAD", "{}").replace(
        '  - template: "You said {{ input }}"\n',
        '  - http: {url: "http://127.0.0.1:9/lights", method: POST}\n')
    async with run_daemon(tmp_path) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("lights", pipe)
        with capture_logs() as logs:
            async with d.http.ws_connect(d.ws_url("/ws/lights")) as ws:
                await wait_until(lambda: any(e["event"] == "voice_no_speculation"
                                             for e in logs))
                await ws.close()
    refused = [e for e in logs if e["event"] == "voice_no_speculation"]
    assert refused[0]["step"] == "http"


@pytest.mark.parametrize(("text", "complete"), [
    ("Turn on the kitchen lights.", True), ("What time is it?", True),
    ("Turn it off", True), ("Call her.", True), ("Set the alarm for 7.", True),
    ("Turn on the.", False), ("Remind me to", False), ("Remind me too.", False),
    ("Set a timer for", False),
    ("Turn off the lamp and", False), ("Well,", False), ("", False),
])
def test_the_transcript_check(text: str, complete: bool) -> None:
    assert sounds_complete(text) is complete


def test_smart_turn_ships_in_the_pipecat_wheel_and_runs(models: Models, tmp_path: Path
                                                        ) -> None:
    model = SmartTurn()
    audio = ssml(tmp_path, "what time is it")
    p = model.probability(from_pcm(audio.pcm + silence(0.2).pcm))
    assert 0.5 < p <= 1.0


async def test_the_first_clause_is_spoken_at_its_comma() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for c in ["Sure, I will turn", " on the kitchen lights,", " and the hall", "way. Ok"]:
            yield c

    assert [s async for s in sentences(chunks())] == [
        "Sure, I will turn on the kitchen lights,", "and the hallway.", "Ok"]
