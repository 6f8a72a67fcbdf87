"""The microphone loop behind the ``mic`` trigger: open, listen, recover, release.

:func:`listen_mic` opens the device, reports started, feeds every frame to a
:class:`~harkd.voice.listen.Listener`, and when the device fails or goes silent, closes
it and retries with exponential backoff (logged) until it is back. The device is released
in ``finally`` when the pipeline is removed or reloaded (the task is cancelled).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..logs import get_logger
from .capture import Capture, DeviceLost
from .clean import CleanConfig
from .listen import BargeIn, ListenConfig, Listener, Mode
from .vad import VadConfig
from .wake import WakeConfig

if TYPE_CHECKING:
    from ..core.bound import Bound

log = get_logger("harkd.voice")

#: the ``vad`` options that are durations
VAD_DURATIONS = ("min_speech", "silence", "min_silence", "max_utterance", "pre_roll")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


def listen_config(params: dict[str, Any]) -> ListenConfig:
    """The listener options of a mic trigger's (or audio mode's) validated parameters."""
    from ..durations import seconds

    vad_raw = dict(params.get("vad") or {})
    vad = VadConfig(
        aggressiveness=int(vad_raw.get("aggressiveness", VadConfig.aggressiveness)),
        # YAML reads a bare off as false
        end_of_turn=vad_raw.get("end_of_turn", VadConfig.end_of_turn) or "off",
        threshold=float(vad_raw.get("threshold", VadConfig.threshold)),
        speculate=bool(vad_raw.get("speculate", VadConfig.speculate)),
        **{k: seconds(v) for k, v in vad_raw.items() if k in VAD_DURATIONS})
    wake_raw = params.get("wake")
    wake: WakeConfig | None = None
    if isinstance(wake_raw, str):
        wake = WakeConfig(phrase=wake_raw)
    elif isinstance(wake_raw, dict):
        engine = wake_raw.get("engine", "whisper")
        phrase = wake_raw.get("phrase")
        model = wake_raw.get("model")
        if engine == "microwakeword" and phrase is None:
            from .microwake import phrase_of

            model = model or "okay_nabu"
            phrase = phrase_of(WakeConfig(engine=engine, model=model))
        wake = WakeConfig(
            phrase=phrase or WakeConfig.phrase,
            sensitivity=float(wake_raw.get("sensitivity", WakeConfig.sensitivity)),
            refractory=seconds(wake_raw.get("refractory", WakeConfig.refractory)),
            follow_up=seconds(wake_raw.get("follow_up", WakeConfig.follow_up)),
            engine=engine,
            model=model,
        )
    mode: Mode = params.get("mode") or ("wake" if wake else "always")
    bi = params.get("barge_in", True)
    barge = BargeIn(enabled=bi) if isinstance(bi, bool) else BargeIn(
        enabled=bool(bi.get("enabled", True)), ratio=float(bi.get("ratio", BargeIn.ratio)),
        min_level=float(bi.get("min_level", BargeIn.min_level)),
        echo=bi.get("echo", BargeIn.echo))
    clean_raw = params.get("clean") or {}
    clean = CleanConfig(noise_suppression=int(clean_raw.get("noise_suppression", 0)),
                        auto_gain=int(clean_raw.get("auto_gain", 0)))
    return ListenConfig(mode=mode, vad=vad, wake=wake, barge_in=barge, clean=clean)


async def listen_mic(
    bound: Bound,
    params: dict[str, Any],
    started: Callable[[], None],
    live: dict[str, Listener],
) -> None:
    """Capture from the configured device until cancelled; see the module docstring."""
    from .models import whisper

    config = listen_config(params)
    device = params.get("device")
    device = None if device in (None, "default") else device
    trigger = {"kind": "mic", "device": device or "default", "mode": config.mode}
    listener = Listener(bound, config, trigger)
    live[bound.name] = listener
    loop = asyncio.get_running_loop()
    worker = asyncio.create_task(listener.serve(), name=f"mic-listener:{bound.name}")
    if params.get("preload", True):
        # Load Whisper now, not on the first utterance (it is shared, so this is once).
        bound.services.spawn(whisper(bound.services))
    delay = BACKOFF_START
    reported = False
    try:
        while True:
            capture = Capture(device)
            try:
                await _open(capture, loop)
            except Exception as exc:  # noqa: BLE001 - any PortAudio failure means retry later
                log.warning("mic_open_failed", device=device or "default",
                            error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                if not reported:
                    started()  # the pipeline is bound; the device may be plugged in later
                    reported = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            log.info("mic_opened", device=capture.describe(), mode=config.mode)
            if not reported:
                started()
                reported = True
            try:
                async for frame, at in capture.frames():
                    listener.feed(frame, at)
                    delay = BACKOFF_START
            except DeviceLost as exc:
                log.warning("mic_device_lost", device=device or "default", error=str(exc),
                            retry_in=delay)
            finally:
                await _release(capture)
                if capture.dropped or capture.overruns:
                    log.warning("mic_overruns", dropped=capture.dropped,
                                overruns=capture.overruns)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
    finally:
        live.pop(bound.name, None)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        log.info("mic_released", device=device or "default")


CLOSE_TIMEOUT = 3.0


async def _release(capture: Capture) -> None:
    """Close the device even if we are being cancelled: the next version may need it.

    PortAudio can hang in ``abort`` when the sound server died under it; after
    ``CLOSE_TIMEOUT`` the closing thread is left behind so that retries and shutdown go on.
    """
    closing = _in_daemon_thread(capture.close)
    try:
        # shielded: a cancellation ends this wait, not the close (waited for below)
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.shield(closing)
    except TimeoutError:
        log.warning("mic_close_stuck", timeout=CLOSE_TIMEOUT)
    except asyncio.CancelledError:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await closing
        raise


def _in_daemon_thread(fn: Callable[[], None]) -> asyncio.Future[None]:
    """Run ``fn`` in a daemon thread of its own (not the executor, whose shutdown would
    wait for a thread stuck in PortAudio); the future resolves when it returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def work() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the future
            loop.call_soon_threadsafe(_settle, future, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, None)
        finally:
            _CLOSING.discard(threading.current_thread())

    thread = threading.Thread(target=work, name="mic-close", daemon=True)
    if not _CLOSING:
        atexit.register(_exit_guard)  # after sounddevice's own handler, so it runs first
    _CLOSING.add(thread)
    thread.start()
    return future


#: threads closing a stream; one stuck in PortAudio's abort holds the lock that
#: Pa_Terminate needs, and sounddevice calls Pa_Terminate at interpreter exit
_CLOSING: set[threading.Thread] = set()


def _exit_guard() -> None:
    """At exit, with a close still stuck, skip sounddevice's Pa_Terminate: it would hang
    the process forever, and the operating system frees the device anyway."""
    if any(t.is_alive() for t in _CLOSING):
        import sounddevice as sd

        handler = getattr(sd, "_exit_handler", None)
        if handler is not None:
            atexit.unregister(handler)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


async def _open(capture: Capture, loop: asyncio.AbstractEventLoop) -> None:
    """Open the device in a thread; if cancelled meanwhile, close what got opened."""
    opening = asyncio.ensure_future(asyncio.to_thread(capture.open, loop))
    try:
        await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await opening
        capture.close()
        raise
