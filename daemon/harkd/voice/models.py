"""Speech models loaded once per daemon and shared by every pipeline.

Loading Whisper or Piper takes about a second and a few hundred MB; each is loaded in a
thread on first use, kept in ``Services.shared`` under a key naming the model and its
options, and reused by every pipeline and every reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..logs import get_logger

if TYPE_CHECKING:
    from ..contracts import Services

log = get_logger("harkd.voice")

T = TypeVar("T")
_LOCKS = "voice.locks"


async def shared(services: Services, key: str, load: Callable[[], T]) -> T:
    """The singleton ``key`` of ``services``, created by ``load()`` in a thread once."""
    if key in services.shared:
        found: T = services.shared[key]
        return found
    locks: dict[str, asyncio.Lock] = services.shared.setdefault(_LOCKS, {})
    lock = locks.setdefault(key, asyncio.Lock())
    async with lock:
        if key not in services.shared:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            services.shared[key] = await asyncio.to_thread(load)
            log.info("voice_model_loaded", model=key,
                     load_ms=round((loop.time() - t0) * 1000, 1))
    value: T = services.shared[key]
    return value


WHISPER_DEFAULTS: dict[str, Any] = {"model": None, "compute_type": "int8", "threads": 0}


def whisper_key(**options: Any) -> str:
    """The ``Services.shared`` key of the Whisper model loaded with ``options``."""
    full = {**WHISPER_DEFAULTS, **options}
    return "voice.whisper:" + ",".join(f"{k}={v}" for k, v in sorted(full.items()))


def tts_key(engine: str, **options: Any) -> str:
    """The ``Services.shared`` key of the synthesizer ``engine`` loaded with ``options``."""
    return f"voice.tts:{engine}:" + ",".join(f"{k}={v}" for k, v in sorted(options.items()))


async def whisper(services: Services, **options: Any) -> Any:
    """The shared :class:`~harkd.voice.stt.Whisper` for these options."""
    from .stt import Whisper

    full = {**WHISPER_DEFAULTS, **options}
    return await shared(services, whisper_key(**full), lambda: Whisper.load(**full))


async def tts_engine(services: Services, engine: str, **options: Any) -> Any:
    """The shared speech synthesizer named ``engine`` (``piper`` or ``espeak``)."""
    from .tts import ENGINES

    factory = ENGINES[engine]
    return await shared(services, tts_key(engine, **options), lambda: factory(**options))
