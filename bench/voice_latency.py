"""Voice-to-voice latency over WebSocket audio: last sample of speech → first reply audio.

    .venv/bin/python bench/voice_latency.py [--n 20] [--llm] [--paused 8]
        [--modes baseline,turn] [--silence 400ms] [--beam 1] [--model tiny.en+base]

A real daemon serves one audio-mode pipeline per mode (stt → llm default model
streaming, with --llm; else a template → tts (Piper) → play). A client sends each
generated command at real-time pace to each mode in turn (so both see the same machine
load) and times the first binary reply frame against the end of its speech. Modes:

* ``baseline``: the fixed-silence endpointer of before issue 15 (``vad: {silence:
  --silence, end_of_turn: off, speculate: false}``, stt window 30 s);
* ``turn``: the defaults (Smart Turn v3 + transcript check at a 200 ms pause, the
  pipeline started speculatively at the pause, 1 s silence at most) and stt window 15 s;
* ``heuristic``: as ``turn`` with ``end_of_turn: heuristic``;
* ``fixed-spec``: the baseline's fixed silence, with speculation and window 15 s.

``--beam`` sets the stt step's ``beam_size`` in every mode (1, greedy, by default), and
``--model`` its ``model`` (tiny.en by default; ``tiny.en+base`` is the pair that checks
itself).
``--paused`` more utterances have a 600 ms pause mid-phrase ("turn on the … kitchen
lights", espeak-ng SSML breaks): a turn cut there is a false cut-off. Wasted speculative
calls are the speculative runs discarded because the user went on (from the daemon's
log). The split per stage comes from the run log: endpointing wait, STT (Whisper's work,
at the pause or after the turn), text to the first clause (the LLM), TTS of it, and how
long a speculative reply waited for the turn to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.frames import Audio, from_pcm, normalise, read_wav, to_pcm
from voice_common import COMMANDS, espeak, pct

PIPE = """\
trigger: {websocket: {mode: audio, audio: {vad: VAD}}}
steps:
  - stt: {window: WINDOW, beam_size: BEAMMODEL}
  - MIDDLE
  - tts: {}
  - play: {}
"""
LLM = ("llm: {model: default, stream: true, max_tokens: 40, "
       "system: Answer in one short sentence.}")
TEMPLATE = 'template: "Okay. You said {{ input }}."'
MODES = {
    "baseline": ("{silence: SILENCE, end_of_turn: off, speculate: false}", "30s"),
    "turn": ("{}", "15s"),
    "heuristic": ("{end_of_turn: heuristic}", "15s"),
    "fixed-spec": ("{silence: SILENCE, end_of_turn: off}", "15s"),
}
PAUSED = [
    ("turn on the", "kitchen lights"), ("set a timer for", "ten minutes"),
    ("remind me to", "call mom"), ("what is the", "weather tomorrow"),
    ("add milk to", "the shopping list"), ("dim the lights in", "the hallway"),
    ("play some jazz and", "turn it up"), ("open the", "garage door"),
]


def paused(first: str, rest: str) -> Audio:
    """``first <600 ms pause> rest`` by espeak-ng (SSML), padded like ``espeak``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-m", "-w", str(out),
                        f"{first} <break time='600ms'/> {rest}"], check=True)
        speech = to_pcm(normalise(from_pcm(read_wav(out).pcm)))
    pad = b"\0" * 6400 * 2
    return Audio(pad + speech + pad)


async def one(d: Any, name: str, audio: Audio) -> dict[str, Any]:
    async with d.http.ws_connect(d.ws_url(f"/ws/{name}")) as ws:
        step = 640
        speech_end = 0.0
        pcm = audio.pcm
        tail = len(pcm.rstrip(b"\0"))
        t_first: float | None = None
        results: list[dict[str, Any]] = []
        transcripts: list[str] = []

        async def reader() -> None:
            nonlocal t_first
            async for msg in ws:
                if msg.type.name == "BINARY" and t_first is None:
                    t_first = time.monotonic()
                elif msg.type.name == "TEXT":
                    ev = json.loads(msg.data)
                    if ev["type"] == "transcript":
                        transcripts.append(ev["text"])
                    elif ev["type"] in ("result", "error"):
                        results.append(ev)

        task = asyncio.create_task(reader())
        for i in range(0, len(pcm), step):
            await ws.send_bytes(pcm[i:i + step])
            if i <= tail < i + step:
                speech_end = time.monotonic()
            await asyncio.sleep(0.02)
        # silence until a result, then 1.2 s more: a cut turn's second half shows up
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:
            if results and quiet_until is None:
                quiet_until = time.monotonic() + 1.2
            await ws.send_bytes(b"\0" * step)
            await asyncio.sleep(0.02)
        task.cancel()
        result = results[0]
        assert result["type"] == "result", result
        async with d.http.get(d.url(f"/api/runs/{result['run_id']}")) as resp:
            run = await resp.json()
    steps = run["steps"]
    stt = steps[0]["detail"]
    play = steps[-1]["detail"]
    tts = play.get("tts", {})
    total = 1000 * (t_first - speech_end) if t_first else float("nan")
    return {"total": total, "endpoint": 1000 * stt["turn"]["waited"],
            "stt": stt.get("pass_stt_ms", stt.get("stt_ms", 0.0)),
            "to_first_clause": tts.get("first_sentence_ms", 0.0),
            "tts_first": tts.get("first_audio_ms", 0.0) - tts.get("first_sentence_ms", 0.0),
            "gate_wait": play.get("gate_ms", 0.0),
            "turns": len(transcripts), "text": transcripts[0] if transcripts else ""}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--paused", type=int, default=8)
    ap.add_argument("--llm", action="store_true")
    ap.add_argument("--silence", default="400ms")
    ap.add_argument("--modes", default="baseline,turn")
    ap.add_argument("--beam", type=int, default=1, help="the stt step's beam_size")
    ap.add_argument("--model", default=None, help="the stt step's model")
    args = ap.parse_args()
    from harkd.testing import capture_logs, run_daemon, wait_until
    from harkd.voice.models import tts_engine, whisper
    from harkd.voice.turn import smart_turn

    modes = args.modes.split(",")
    middle = LLM if args.llm else TEMPLATE
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    cut: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    async with run_daemon(Path(tempfile.mkdtemp())) as d:
        await whisper(d.daemon.services, model=args.model)
        await tts_engine(d.daemon.services, "piper")
        await smart_turn(d.daemon.services)
        for m in modes:
            vad, window = MODES[m]
            await d.write(m, PIPE.replace("VAD", vad.replace("SILENCE", args.silence))
                          .replace("WINDOW", window).replace("BEAM", str(args.beam))
                          .replace("MODEL", f", model: {args.model}" if args.model else "")
                          .replace("MIDDLE", middle))
            await wait_until(lambda m=m: d.state(m) == "active")  # type: ignore[misc]
            await one(d, m, espeak("warm up"))
        with capture_logs() as logs:
            for i in range(args.n):
                audio = espeak(COMMANDS[i % len(COMMANDS)])
                for m in modes:
                    rows[m].append(await one(d, m, audio))
            for i in range(args.paused):
                first, rest = PAUSED[i % len(PAUSED)]
                audio = paused(first, rest)
                for m in modes:
                    r = await one(d, m, audio)
                    r["cut"] = r["turns"] > 1 or rest.split()[-1] not in r["text"].lower()
                    cut[m].append(r)
        events = [e for e in logs if str(e.get("event", "")).startswith("voice_speculation")]
    by_pipe: dict[str, dict[str, int]] = {m: {} for m in modes}
    for e in events:
        kind = str(e["event"]).removeprefix("voice_speculation_")
        pipe = str(e.get("pipeline", ""))
        if pipe in by_pipe:
            by_pipe[pipe][kind] = by_pipe[pipe].get(kind, 0) + 1
    print(f"voice-to-voice, {args.n} commands + {args.paused} with a 600 ms mid-phrase "
          f"pause ({'llm default' if args.llm else 'template'}; baseline silence "
          f"{args.silence}; stt beam_size {args.beam}, model {args.model or 'tiny.en'}):")
    base = modes[0]
    for m in modes:
        vals = rows[m] + [r for r in cut[m] if not r["cut"]]
        print(f" {m} ({MODES[m][0].replace('SILENCE', args.silence)}, window "
              f"{MODES[m][1]}):")
        for key in ("total", "endpoint", "stt", "to_first_clause", "tts_first", "gate_wait"):
            v = [r[key] for r in vals]
            print(f"  {key:16} p50 {pct(v, 50):7.0f} ms   p95 {pct(v, 95):7.0f} ms")
        cuts = sum(r["cut"] for r in cut[m])
        for r in cut[m]:
            if r["cut"]:
                print(f"    cut: {r['text']!r} ({r['turns']} turns)")
        spec = by_pipe[m]
        print(f"  false cut-offs {cuts}/{len(cut[m])}; speculative runs started "
              f"{spec.get('started', 0)}, used {spec.get('used', 0)}, discarded (wasted) "
              f"{spec.get('discarded', 0)}")
        if m != base:
            p50 = pct([r["total"] for r in vals], 50)
            b50 = pct([r["total"] for r in rows[base] + [r for r in cut[base] if not r["cut"]]],
                      50)
            print(f"  p50 ratio to {base}: {p50 / b50:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
