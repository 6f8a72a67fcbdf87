"""End of speech → first reply audio through a real wyoming-satellite, next to the same
pipeline over harkd's WebSocket audio.

    .venv/bin/python bench/wyoming_latency.py [--n 10]

One daemon serves two copies of one pipeline (stt → template → tts, the reply spoken with
no play step): one behind a ``satellite`` trigger driving a real ``wyoming-satellite``
process, one behind a ``websocket`` trigger in audio mode. Each of ``--n`` generated
commands is spoken into both, alternately:

- satellite: its ``--mic-command`` plays the speech in 1,024-sample chunks at real-time
  pace and logs when the last chunk of speech left it; its ``--snd-command`` (started by
  the satellite for each reply, ``python -S``) logs when the first reply audio reached it;
- WebSocket: a client sends the same speech in the same 1,024-sample blocks at the same
  pace and times the first binary reply frame against the end of its speech.

The two paths take turns (which goes first alternates), so a change in the machine's
load falls on both.
Both use the same VAD silence (500 ms), so the difference is the Wyoming path itself
(satellite process, its event handling, the speaker process start). Prints p50 (and
min/max) of each, their difference and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from harkd.testing import run_daemon, wait_until
from harkd.testing_satellite import run_satellite
from harkd.voice.frames import Audio
from voice_common import COMMANDS, espeak

BLOCK = 1024 * 2
SILENCE = "500ms"
STEPS = """\
steps:
  - stt: {}
  - template: "Okay. You said {{ input }}."
  - tts: {}
"""


def trimmed(audio: Audio) -> bytes:
    """Speech with its leading pad and no trailing silence: its end is the file's end."""
    return audio.pcm[: len(audio.pcm.rstrip(b"\0")) // 2 * 2]


Split = dict[str, float]


async def split(d: Any, run_id: str, end: float, first: float) -> Split:
    """The total and its parts from the run log: endpointing (end of speech → VAD's
    decision), harkd (decision → first reply audio sent), delivery (sent → heard)."""
    async with d.http.get(d.url(f"/api/runs/{run_id}")) as resp:
        run = await resp.json()
    decided = run["steps"][0]["detail"]["turn"]["ended_wall"]
    sent = run["steps"][-1]["detail"]["first_audio_at"]
    return {"total": 1000 * (first - end), "endpoint": 1000 * (decided - end),
            "harkd": 1000 * (sent - decided), "delivery": 1000 * (first - sent)}


async def ws_once(d: Any, pcm: bytes) -> Split:
    async with d.http.ws_connect(d.ws_url("/ws/wsbench")) as ws:
        first: float | None = None
        run_id = ""
        done = asyncio.Event()

        async def reader() -> None:
            nonlocal first, run_id
            async for msg in ws:
                if msg.type.name == "BINARY" and first is None:
                    first = time.time()
                elif msg.type.name == "TEXT":
                    event = json.loads(msg.data)
                    if event["type"] in ("result", "error"):
                        run_id = event["run_id"]
                        done.set()
                        return

        task = asyncio.create_task(reader())
        t0 = time.monotonic()
        n = 0
        end = 0.0
        blocks = [pcm[i:i + BLOCK].ljust(BLOCK, b"\0") for i in range(0, len(pcm), BLOCK)]
        while not done.is_set():
            block = blocks[n] if n < len(blocks) else b"\0" * BLOCK
            n += 1
            delay = t0 + n * BLOCK / 2 / 16000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_bytes(block)
            if n == len(blocks):
                end = time.time()
        await task
    assert first is not None
    return await split(d, run_id, end, first)


async def sat_once(d: Any, sat: Any, pcm: bytes, index: int) -> Split:
    before = len(sat.replies())
    sat.say(pcm, name=f"{index:03d}")
    await wait_until(lambda: len(sat.replies()) > before, 120, interval=0.05)
    meta, _ = sat.replies()[before]
    spoken = [s for s in sat.spoken() if s["utterance"] == f"{index:03d}"]
    await asyncio.sleep(0.3)  # the run is logged a moment after its audio went out
    async with d.http.get(d.url("/api/runs?pipeline=satbench&limit=1")) as resp:
        run_id = (await resp.json())["runs"][0]["id"]
    return await split(d, run_id, spoken[-1]["end"], meta["first"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    from harkd.voice.models import tts_key, whisper_key
    from harkd.voice.stt import Whisper
    from harkd.voice.tts import PiperTTS

    shared = {whisper_key(): Whisper.load(), tts_key("piper"): PiperTTS()}
    speech = [trimmed(espeak(text)) for text in COMMANDS[: args.n]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with run_satellite(root / "sat", name="Bench") as sat, \
                run_daemon(root / "d", log_level="warning") as d:
            d.daemon.services.shared.update(shared)
            vad = f"vad: {{silence: {SILENCE}}}"
            await d.write("satbench", f"trigger: {{satellite: {{uri: {sat.uri}, {vad}}}}}\n"
                          + STEPS)
            await d.write("wsbench", f"trigger: {{websocket: {{mode: audio, audio: {{{vad}}}}}}}\n"
                          + STEPS)
            link = d.daemon.catalog.entries["satbench"].bound.pipeline.trigger.live[sat.uri]
            await wait_until(lambda: link.connected and link.chunks > 3, 30)
            # warm up both paths once (first-run costs: onnx, whisper, sockets)
            await sat_once(d, sat, speech[0], 999)
            await ws_once(d, speech[0])
            sats, wss = [], []
            for i, pcm in enumerate(speech):
                # alternate which path goes first, so drift in the machine's load is shared
                if i % 2:
                    wss.append(await ws_once(d, pcm))
                    sats.append(await sat_once(d, sat, pcm, i))
                else:
                    sats.append(await sat_once(d, sat, pcm, i))
                    wss.append(await ws_once(d, pcm))
                print(f"{i:2d} {COMMANDS[i]!r:32} satellite " + _row(sats[-1])
                      + "  | websocket " + _row(wss[-1]), flush=True)
    print()
    print(f"end of speech -> first reply audio, p50 over {len(speech)} utterances "
          f"(VAD silence {SILENCE}, 1,024-sample chunks), ms:")
    for label, rows in (("wyoming-satellite", sats), ("websocket audio", wss)):
        totals = [r["total"] for r in rows]
        parts = ", ".join(f"{k} {statistics.median(r[k] for r in rows):.1f}"
                          for k in ("endpoint", "harkd", "delivery"))
        print(f"  {label:18} {statistics.median(totals):7.1f} (min {min(totals):.1f}, max "
              f"{max(totals):.1f}; p50 of parts: {parts})")
    p_sat = statistics.median(r["total"] for r in sats)
    p_ws = statistics.median(r["total"] for r in wss)
    d_sat = statistics.median(r["delivery"] + r["endpoint"] for r in sats)
    d_ws = statistics.median(r["delivery"] + r["endpoint"] for r in wss)
    print(f"  difference {p_sat - p_ws:+.1f} ms, ratio {p_sat / p_ws:.3f}; transport only "
          f"(endpoint + delivery, without harkd's stt/tts time): {d_sat:.1f} vs {d_ws:.1f} "
          f"ms, difference {d_sat - d_ws:+.1f} ms")


def _row(r: Split) -> str:
    return (f"{r['total']:7.1f} (ep {r['endpoint']:5.1f} hk {r['harkd']:6.1f} "
            f"dl {r['delivery']:5.1f})")


if __name__ == "__main__":
    asyncio.run(main())
