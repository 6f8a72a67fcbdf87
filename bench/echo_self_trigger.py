"""Echo: does the assistant hear itself while its reply plays on the same device?

    .venv/bin/python bench/echo_self_trigger.py [--gains 1,2] [--user-volume 0.5]

A user-mode PulseAudio null sink is both the speaker and, through its monitor, the
microphone (a perfect loopback). A long Piper reply is played into it through harkd's
``DeviceOut`` while the monitor is heard through ``Capture`` and goes through what a
:class:`~harkd.voice.listen.Listener` does to each frame before VAD (the echo gate, the
optional cleaner, the endpointer), as the mic trigger does; three short user utterances
are played over the reply with ``paplay`` at ``--user-volume``. Each VAD onset during the
reply is either a barge-in (it falls in a user utterance) or a self-trigger (it does not).
``--gains`` scales what reaches the sink against what harkd notes as played: 2 makes the
echo twice as loud as the reference (a speaker next to the mic, or a mic gain), which is
where the level heuristic breaks down.

Echo handling compared, in the same run: ``none`` (no floor at all), ``level`` (voice must
be ``ratio`` times louder than the playback) and ``reference`` (the played audio is taken
out of the mic signal, harkd.voice.echo). ``--clean`` adds automatic gain and noise
suppression after the echo handling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harkd.voice.capture import Capture
from harkd.voice.clean import CleanConfig, Cleaner
from harkd.voice.echo import EchoGate
from harkd.voice.frames import Audio, from_pcm, normalise, to_pcm, write_wav
from harkd.voice.playback import DeviceOut, Speaking
from harkd.voice.tts import PiperTTS
from harkd.voice.vad import Endpointer, VadConfig
from voice_common import espeak

REPLY = ("Here is the weather for the next few days. Tomorrow starts cloudy with a light "
         "breeze from the west, and the afternoon brings sunny spells and a high of "
         "eighteen degrees. On Tuesday a band of rain moves in from the coast, heavy at "
         "times in the evening. Wednesday is drier and cooler, with a chance of frost in "
         "sheltered places overnight. The weekend looks settled and bright.")
USER = ["stop", "wait a moment", "that is enough thank you"]
#: where the user utterances start, in seconds after the reply starts
USER_AT = [4.0, 9.0, 14.0]
VERBOSE = False

MODES: dict[str, dict[str, float | str]] = {
    "none": {"mode": "level", "ratio": 0.0, "min_level": 0.0},
    "level": {"mode": "level"},
    "reference": {"mode": "reference"},
}


class LoudOut(DeviceOut):
    """A device output whose echo is ``gain`` times louder than what it notes as played."""

    def __init__(self, device: str, gain: float) -> None:
        super().__init__(device)
        self.gain = gain

    def _write(self, audio: Audio, speaking: Speaking) -> None:
        step = int(audio.rate * 0.02) * 2
        for i in range(0, len(audio.pcm), step):
            if speaking.interrupted:
                return
            block = audio.pcm[i:i + step]
            speaking.note(block, audio.rate)
            self._stream.write(to_pcm(from_pcm(block) * self.gain))


async def trial(mode: str, reply: Audio, user: list[Path], env: dict[str, str],
                user_volume: float, clean: CleanConfig, gain: float) -> tuple[int, int, float]:
    """(self-triggers, user utterances heard, seconds of reply) for one echo mode."""
    gate = EchoGate(**MODES[mode])  # type: ignore[arg-type]
    cleaner = Cleaner(clean) if clean.enabled else None
    endpointer = Endpointer(VadConfig())
    speaking = Speaking(gate.reference)
    onsets: list[float] = []
    capture = Capture("pulse")
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(capture.open, loop)
    t_reply = 0.0

    async def listen() -> None:
        async for frame, at in capture.frames():
            frame, floor = gate(frame, speaking, at)
            if cleaner is not None:
                frame = cleaner(frame)
            endpointer.push(frame, floor)
            if endpointer.just_started:
                onsets.append(time.monotonic())

    task = asyncio.create_task(listen())
    try:
        await asyncio.sleep(1.0)
        out = LoudOut("pulse", gain)
        await out.begin(reply.rate)
        speaking.active = True
        t_reply = time.monotonic()
        players: list[subprocess.Popen[bytes]] = []

        async def users() -> None:
            for at, wav in zip(USER_AT, user, strict=True):
                await asyncio.sleep(max(0.0, t_reply + at - time.monotonic()))
                players.append(subprocess.Popen(
                    ["paplay", f"--volume={int(65536 * user_volume)}", str(wav)], env=env))

        voices = asyncio.create_task(users())
        await out.write(reply, speaking)
        await out.end(False)
        speaking.active = False
        await voices
        for p in players:
            p.wait()
        await asyncio.sleep(1.0)  # the echo tail
    finally:
        task.cancel()
        await asyncio.sleep(0)
        capture.close()
    windows = [(t_reply + at - 0.3, t_reply + at + 1.8) for at in USER_AT]
    self_triggers = sum(not any(lo <= t <= hi for lo, hi in windows) for t in onsets)
    heard = sum(any(lo <= t <= hi for t in onsets) for lo, hi in windows)
    if VERBOSE:
        print(f"  {mode}: onsets at", [round(t - t_reply, 2) for t in onsets])
    return self_triggers, heard, reply.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gains", default="1,2")
    ap.add_argument("--user-volume", type=float, default=0.5)
    ap.add_argument("--clean", action="store_true",
                    help="clean: {noise_suppression: 2, auto_gain: 3} on the mic")
    ap.add_argument("--verbose", action="store_true", help="print each onset's time")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    runtime = tempfile.mkdtemp(prefix="harkd-bench-pulse-")
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime,
           "PULSE_SERVER": f"unix:{runtime}/pulse/native"}
    os.environ.update({k: env[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")})
    subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disable-shm=yes",
                    "-L", "module-null-sink sink_name=bench rate=16000 channels=1",
                    "-L", "module-native-protocol-unix"], check=True)
    clean = CleanConfig(2, 3) if args.clean else CleanConfig()
    try:
        time.sleep(1.0)
        piper = PiperTTS()
        spoken = piper.synthesize(REPLY)
        reply = Audio(to_pcm(0.5 * normalise(from_pcm(spoken.pcm))), spoken.rate)
        folder = Path(runtime)
        user = []
        for i, text in enumerate(USER):
            path = folder / f"user{i}.wav"
            write_wav(path, espeak(text, "en-gb", pad=0.0))
            user.append(path)
        print(f"reply {reply.seconds:.1f}s of Piper at {reply.rate} Hz (peak 0.45), users "
              f"at volume {args.user_volume}, clean {args.clean}")
        for gain in (float(g) for g in args.gains.split(",")):
            for mode in MODES:
                st, heard, secs = asyncio.run(trial(mode, reply, user, env,
                                                    args.user_volume, clean, gain))
                print(f"echo gain {gain:g} {mode:9}: self-triggers {st:2} in {secs:.0f}s "
                      f"({st * 60 / secs:.1f}/min), barge-ins heard {heard}/{len(USER)}")
    finally:
        subprocess.run(["pulseaudio", "--kill"], check=False, env=env)



if __name__ == "__main__":
    main()
