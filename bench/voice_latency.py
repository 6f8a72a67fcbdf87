"""Voice-to-voice latency over WebSocket audio: last sample of speech → first reply audio.

    .venv/bin/python bench/voice_latency.py [--n 20] [--llm]

A real daemon serves an audio-mode pipeline (stt → llm default model streaming, with
--llm; else a template) → tts (Piper) → play. A client sends each generated command at
real-time pace and times the first binary reply frame against the end of its speech.
The split comes from the run log: endpointing wait (VAD silence), STT, text to the first
sentence (the LLM), TTS of the first sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from voice_common import COMMANDS, espeak, pct

PIPE = """\
trigger: {websocket: {mode: audio, audio: {vad: {silence: SILENCE}}}}
steps:
  - stt: {}
  - MIDDLE
  - tts: {}
  - play: {}
"""
LLM = ("llm: {model: default, stream: true, max_tokens: 40, "
       "system: Answer in one short sentence.}")
TEMPLATE = 'template: "Okay. You said {{ input }}."'


async def one(d, audio) -> dict[str, float]:  # type: ignore[no-untyped-def]
    async with d.http.ws_connect(d.ws_url("/ws/lat")) as ws:
        step = 640
        speech_end = 0.0
        pcm = audio.pcm
        # find the last non-silent sample: the pad at the end is silence
        tail = len(pcm.rstrip(b"\0"))
        t_first = None
        result = None

        async def reader() -> None:
            nonlocal t_first, result
            async for msg in ws:
                if msg.type.name == "BINARY" and t_first is None:
                    t_first = time.monotonic()
                elif msg.type.name == "TEXT":
                    ev = json.loads(msg.data)
                    if ev["type"] in ("result", "error"):
                        result = ev
                        return

        task = asyncio.create_task(reader())
        for i in range(0, len(pcm), step):
            await ws.send_bytes(pcm[i:i + step])
            if i <= tail < i + step:
                speech_end = time.monotonic()
            await asyncio.sleep(0.02)
        while not task.done():
            await ws.send_bytes(b"\0" * step)
            await asyncio.sleep(0.02)
        assert result is not None and result["type"] == "result", result
        async with d.http.get(d.url(f"/api/runs/{result['run_id']}")) as resp:
            run = await resp.json()
    steps = run["steps"]
    stt = steps[0]["detail"]
    play = steps[-1]["detail"]
    tts = play.get("tts", {})
    return {"total": 1000 * (t_first - speech_end) if t_first else float("nan"),
            "endpoint": 1000 * stt["turn"]["waited"], "stt": stt.get("stt_ms", 0.0),
            "to_first_sentence": tts.get("first_sentence_ms", 0.0),
            "tts_first": tts.get("first_audio_ms", 0.0) - tts.get("first_sentence_ms", 0.0)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--llm", action="store_true")
    ap.add_argument("--silence", default="400ms")
    args = ap.parse_args()
    from harkd.testing import run_daemon, wait_until
    from harkd.voice.models import tts_engine, whisper

    pipe = PIPE.replace("SILENCE", args.silence).replace("MIDDLE", LLM if args.llm else TEMPLATE)
    async with run_daemon(Path(tempfile.mkdtemp())) as d:
        await whisper(d.daemon.services)
        await tts_engine(d.daemon.services, "piper")
        await d.write("lat", pipe)
        await wait_until(lambda: d.state("lat") == "active")
        await one(d, espeak("warm up"))
        rows = [await one(d, espeak(COMMANDS[i % len(COMMANDS)])) for i in range(args.n)]
    print(f"voice-to-voice over {len(rows)} utterances ({'llm default' if args.llm else 'template'}"
          f", vad silence {args.silence}):")
    for key in rows[0]:
        vals = [r[key] for r in rows]
        print(f"  {key:18} p50 {pct(vals, 50):7.0f} ms   p95 {pct(vals, 95):7.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
