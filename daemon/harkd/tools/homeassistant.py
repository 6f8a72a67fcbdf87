"""Home Assistant as tools for ``llm`` steps: list entities, read a state, call a service.

They use Home Assistant's REST API with a long-lived access token from ``harkd.yaml``::

    homeassistant:
      url: http://homeassistant.local:8123
      token: ${env:HA_TOKEN}
      domains: [light, switch, climate, sensor]   # what the model may see and control

Nothing outside ``domains`` is listed, read or controlled, whatever the model asks
(default: ``light``, ``switch``, ``sensor``, ``binary_sensor``, ``climate``, ``cover``,
``fan``, ``media_player``, ``scene``). Each call has a ``timeout`` (default 10 s); a refused
token, a timeout or an unreachable server becomes a :class:`ToolError` that the model
reads as the tool's answer, so the run goes on and can say what went wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import durations
from .registry import ToolContext, ToolError, tool

DEFAULT_DOMAINS = ("light", "switch", "sensor", "binary_sensor", "climate", "cover", "fan",
                   "media_player", "scene")
#: entities one listing returns at most (a home can have thousands)
MAX_ENTITIES = 200
DEFAULT_TIMEOUT = 10.0

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Home Assistant for the ha_entities, ha_state and ha_call_service tools.",
    "required": ["url", "token"],
    "properties": {
        "url": {"type": "string", "description": "Home Assistant's base URL, e.g. "
                "http://homeassistant.local:8123."},
        "token": {"type": "string", "description": "A long-lived access token (profile → "
                  "security); use ${env:HA_TOKEN}."},
        "domains": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                    "default": list(DEFAULT_DOMAINS),
                    "description": "Entity domains the model may see and control."},
        "timeout": {**durations.SCHEMA, "default": "10s"},
    },
}


class HomeAssistant:
    """The configured Home Assistant of one call (read from ``harkd.yaml`` each time, so
    a reload takes effect)."""

    def __init__(self, ctx: ToolContext) -> None:
        if ctx.services is None:
            raise ToolError("Home Assistant tools need the daemon's services")
        conf = ctx.services.settings.extra.get("homeassistant")
        if not isinstance(conf, Mapping) or not conf.get("url") or not conf.get("token"):
            raise ToolError("Home Assistant is not configured: set homeassistant.url and "
                            "homeassistant.token in harkd.yaml")
        self.services = ctx.services
        self.url = str(conf["url"]).rstrip("/")
        self.token = str(conf["token"])
        self.domains = tuple(str(d) for d in conf.get("domains") or DEFAULT_DOMAINS)
        self.timeout = durations.seconds(conf.get("timeout", DEFAULT_TIMEOUT))

    def check(self, entity_or_domain: str) -> str:
        """The domain of an entity id (or a domain), if the owner allows it."""
        domain = entity_or_domain.split(".", 1)[0]
        if domain not in self.domains:
            raise ToolError(f"domain {domain!r} is not allowed (allowed: "
                            f"{', '.join(self.domains)})")
        return domain

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        import aiohttp

        session = self.services.http()
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with session.request(method, self.url + path, json=body, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout),
                                       allow_redirects=False) as resp:
                if resp.status == 401:
                    raise ToolError("Home Assistant refused the token (401): check "
                                    "homeassistant.token")
                if resp.status == 404:
                    raise ToolError(f"Home Assistant has no {path.rsplit('/', 1)[-1]!r}")
                if resp.status >= 400:
                    text = (await resp.text())[:200]
                    raise ToolError(f"Home Assistant answered {resp.status}: {text}")
                return await resp.json(content_type=None)
        except TimeoutError:
            raise ToolError(f"Home Assistant did not answer within {self.timeout:g}s") \
                from None
        except aiohttp.ClientError as exc:
            raise ToolError(f"cannot reach Home Assistant: {exc}") from None


def _entity(state: Mapping[str, Any]) -> dict[str, Any]:
    attrs = state.get("attributes") or {}
    out = {"entity_id": state.get("entity_id"), "state": state.get("state"),
           "name": attrs.get("friendly_name")}
    for key in ("unit_of_measurement", "brightness", "temperature", "current_temperature"):
        if key in attrs:
            out[key] = attrs[key]
    return out


@tool(name="ha_entities", register=False)
async def ha_entities(domain: str = "", ctx: ToolContext | None = None) -> list[dict[str, Any]]:
    """List the Home Assistant entities you may use, with their state and name.

    Args:
        domain: Only this domain (light, switch, sensor, ...); empty for every allowed one.
    """
    assert ctx is not None
    ha = HomeAssistant(ctx)
    if domain:
        ha.check(domain)
    states = await ha.request("GET", "/api/states")
    if not isinstance(states, list):
        raise ToolError("Home Assistant answered /api/states with something not a list")
    out = [_entity(s) for s in states if isinstance(s, Mapping)
           and str(s.get("entity_id", "")).split(".", 1)[0] in ha.domains
           and (not domain or str(s.get("entity_id")).startswith(domain + "."))]
    return out[:MAX_ENTITIES]


@tool(name="ha_state", register=False)
async def ha_state(entity_id: str, ctx: ToolContext | None = None) -> dict[str, Any]:
    """Get the current state and attributes of one Home Assistant entity.

    Args:
        entity_id: The entity, e.g. light.kitchen or sensor.outside_temperature.
    """
    assert ctx is not None
    ha = HomeAssistant(ctx)
    ha.check(entity_id)
    state = await ha.request("GET", f"/api/states/{entity_id}")
    if not isinstance(state, Mapping):
        raise ToolError("Home Assistant answered with something not a state")
    return {**_entity(state), "attributes": state.get("attributes") or {},
            "last_changed": state.get("last_changed")}


@tool(name="ha_call_service", register=False)
async def ha_call_service(domain: str, service: str, entity_id: str,
                          data: dict[str, Any] | None = None,
                          ctx: ToolContext | None = None) -> dict[str, Any]:
    """Call a Home Assistant service on an entity, e.g. light.turn_on for light.kitchen.

    Args:
        domain: The service's domain, e.g. light, switch, climate.
        service: The service, e.g. turn_on, turn_off, toggle, set_temperature.
        entity_id: The entity to act on; it must be in the same domain.
        data: Extra service data, e.g. {"brightness_pct": 50} or {"temperature": 21}.
    """
    assert ctx is not None
    ha = HomeAssistant(ctx)
    ha.check(domain)
    if ha.check(entity_id) != domain:
        raise ToolError(f"{entity_id} is not in domain {domain}")
    if not service.replace("_", "").isalnum():
        raise ToolError(f"{service!r} is not a service name")
    body = {**(data or {}), "entity_id": entity_id}
    changed = await ha.request("POST", f"/api/services/{domain}/{service}", body)
    states = [_entity(s) for s in changed if isinstance(s, Mapping)] \
        if isinstance(changed, list) else []
    return {"called": f"{domain}.{service}", "entity_id": entity_id, "changed": states}


HA_ENTITIES = ha_entities
HA_STATE = ha_state
HA_CALL_SERVICE = ha_call_service
