"""The scripted microphone and the recording speaker of :mod:`harkd.testing_satellite`.

    python -S satellite_io.py mic QUEUE_DIR LOG_FILE
    python -S satellite_io.py snd OUT_DIR

``mic`` writes 1,024-sample chunks of 16 kHz s16le to stdout at real-time pace: silence,
or the next ``*.raw`` file dropped into QUEUE_DIR; each chunk is written once it has been
"heard" (at its end), and when the last chunk of a file is out, a JSON line with the
file's name and the wall time goes to LOG_FILE. ``snd`` is started by the satellite for
each reply: it copies stdin to OUT_DIR/NNN.raw and writes OUT_DIR/NNN.json with the wall
time of the first audio. Only ``os``, ``sys``, ``time`` and ``json`` are imported, so
the speaker starts in a few milliseconds.
"""

import json
import os
import sys
import time

CHUNK = 1024 * 2
RATE = 16000


def mic(queue: str, log: str) -> None:
    """Play the queued speech, and silence, at real-time pace to stdout."""
    out = sys.stdout.buffer
    seconds = CHUNK / 2 / RATE
    pending = b""
    current = ""
    t0 = time.monotonic()
    n = 0
    while True:
        if not pending:
            ready = sorted(f for f in os.listdir(queue) if f.endswith(".raw"))
            if ready:
                path = os.path.join(queue, ready[0])
                with open(path, "rb") as audio:
                    pending = audio.read()
                os.unlink(path)
                current = ready[0][:-4]
        block, pending = pending[:CHUNK], pending[CHUNK:]
        last = bool(block) and not pending
        n += 1
        delay = t0 + n * seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            out.write(block.ljust(CHUNK, b"\0"))
            out.flush()
        except BrokenPipeError:
            return
        if last:
            with open(log, "a") as lines:
                lines.write(json.dumps({"utterance": current, "end": time.time()}) + "\n")


def snd(folder: str) -> None:
    """Record one reply from stdin."""
    os.makedirs(folder, exist_ok=True)
    names = os.listdir(folder)
    number = sum(1 for f in names if f.endswith((".json", ".part")))
    base = os.path.join(folder, f"{number:03d}")
    open(base + ".part", "w").close()
    first = None
    size = 0
    with open(base + ".raw", "wb") as raw:
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            if first is None:
                first = time.time()
            raw.write(chunk)
            raw.flush()
            size += len(chunk)
    with open(base + ".json", "w") as meta:
        json.dump({"first": first, "end": time.time(), "bytes": size, "rate": 22050}, meta)
    os.unlink(base + ".part")


if __name__ == "__main__":
    if sys.argv[1] == "mic":
        mic(sys.argv[2], sys.argv[3])
    else:
        snd(sys.argv[2])
