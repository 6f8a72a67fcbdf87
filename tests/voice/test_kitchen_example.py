"""The documented example, end to end: a real wyoming-satellite hears "turn on the kitchen
lights", the model (a scripted OpenAI upstream that asks for the tool call, then answers)
switches the light through the Home Assistant tools (a scripted Home Assistant REST
server), and the spoken answer reaches the satellite's speaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from harkd.testing import run_daemon
from harkd.testing_homeassistant import ScriptedHomeAssistant
from harkd.testing_satellite import run_satellite
from harkd.testing_upstream import Reply, ScriptedUpstream
from harkd.voice.frames import rms

from .conftest import Models, Speak
from .test_satellite import reply_of, speech_pcm, streaming

pytestmark = pytest.mark.anyio

CONFIG = """\
models:
  default:
    - {{model: openai/m1, api_base: "{v1}"}}
homeassistant:
  url: {ha}
  token: kitchen-token
  domains: [light]
"""

KITCHEN = """\
description: The kitchen satellite controls the lights
trigger:
  satellite: {{uri: {uri}, vad: {{silence: 500ms}}}}
steps:
  - stt: {{}}
  - llm:
      model: default
      system: >-
        You control the lights of a home through tools. Use ha_entities to find a light,
        ha_call_service to switch it, then answer in one short sentence.
      session: "{{{{ trigger.session }}}}"
      tools: [ha_entities, ha_call_service]
  - tts: {{}}
"""


async def test_the_kitchen_satellite_turns_on_the_lights(
        tmp_path: Path, models: Models, speak: Speak) -> None:
    home = ScriptedHomeAssistant(token="kitchen-token")
    async with home.serve() as ha, ScriptedUpstream() as up, \
            run_satellite(tmp_path / "sat", name="Kitchen") as sat, \
            run_daemon(tmp_path / "d", config=CONFIG.format(v1=up.v1, ha=ha)) as d:
        d.daemon.services.shared.update(models.shared())
        await d.write("kitchen", KITCHEN.format(uri=sat.uri))
        await streaming(d, "kitchen", sat)
        up.plan("m1", Reply(tool_calls=(("ha_call_service", {
            "domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}),)),
            Reply(text="The kitchen light is on."))
        sat.say(speech_pcm(speak, "turn on the kitchen lights"))
        _, reply = await reply_of(sat, 1)
        assert home.states["light.kitchen"]["state"] == "on"
        assert home.calls == [("light", "turn_on", {"entity_id": "light.kitchen"})]
        assert reply.seconds > 0.8 and rms(reply.pcm) > 0.02
        assert "light" in models.transcribe(reply).lower()
        asked = up.requests[0].body["messages"][-1]["content"].lower()
        assert "kitchen lights" in asked  # the model got the transcript
