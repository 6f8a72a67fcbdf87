"""The ``satellite`` trigger: harkd connects to Wyoming satellites and answers them.

``trigger: {satellite: {uri: tcp://kitchen-pi:10700}}`` keeps a connection to a running
``wyoming-satellite`` (as Home Assistant does), runs the pipeline on each utterance the
satellite streams, and sends the spoken reply back to its speaker. ``uri`` may list
several satellites; each has its own connection and session (``trigger.session``). The
options ``vad``, ``wake`` and ``barge_in`` are the mic trigger's. The work is in
:mod:`harkd.voice.satellite`, imported when the trigger binds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import TriggerKind
from ..records import dataclass
from .http import error_response
from .mic import (
    BARGE_IN_SCHEMA,
    CLEAN_SCHEMA,
    VAD_SCHEMA,
    WAKE_SCHEMA,
    check_listening,
)

if TYPE_CHECKING:
    from aiohttp import web

    from ..core.bound import Bound
    from ..core.pipeline import Build
    from ..voice.satellite import SatelliteLink

_URI = re.compile(r"^tcp://[^\s/:]+:\d{1,5}/?$")
URI_SCHEMA: dict[str, Any] = {"type": "string", "pattern": _URI.pattern,
                              "description": "tcp://HOST:PORT of a wyoming-satellite."}


@dataclass(frozen=True, eq=False)
class SatelliteTrigger:
    """A compiled satellite trigger; ``live`` holds the links of the bound version."""

    params: dict[str, Any]
    uris: tuple[str, ...]
    live: dict[str, SatelliteLink] = field(default_factory=dict, compare=False)
    kind: str = "satellite"

    @property
    def routes(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "satellite", "uri": list(self.uris),
                "connected": sorted(u for u, link in self.live.items() if link.connected)}

    async def serve(self, bound: Bound, started: Callable[[], None]) -> None:
        from ..voice.satellite import drive_satellites

        await drive_satellites(bound, self.params, started, self.live)

    async def handle(self, request: web.Request, bound: Bound) -> web.StreamResponse:
        return error_response(404, "a satellite trigger has no HTTP routes")


PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["uri"],
    "properties": {
        "uri": {"description": "The satellite, or a list of satellites, to drive.",
                "anyOf": [URI_SCHEMA, {"type": "array", "minItems": 1, "uniqueItems": True,
                                       "items": URI_SCHEMA}]},
        "mode": {"enum": ["wake", "always"],
                 "description": "wake: turns must start with harkd's wake phrase (for "
                                "satellites without their own); always: every turn. "
                                "Default: wake if wake is set, else always."},
        "wake": WAKE_SCHEMA,
        "vad": VAD_SCHEMA,
        "barge_in": BARGE_IN_SCHEMA,
        "clean": CLEAN_SCHEMA,
        "backoff_max": {**durations.SCHEMA, "default": "30s",
                        "description": "Longest wait between reconnection attempts."},
    },
}


def build(params: dict[str, Any], b: Build) -> SatelliteTrigger:
    check_listening(params, b)
    if "backoff_max" in params:
        b.seconds("backoff_max", params["backoff_max"])
    uri = params.get("uri")
    uris = (uri,) if isinstance(uri, str) else tuple(uri or ())
    return SatelliteTrigger(params=params, uris=uris)


SATELLITE = TriggerKind("satellite", "Wyoming satellites (wyoming-satellite, Home "
                        "Assistant voice devices): each utterance starts a run; the "
                        "spoken reply goes back to the satellite.", PARAMS, build)
