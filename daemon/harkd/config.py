"""Reading ``harkd.yaml``: find it, validate it against the whole settings schema (with
positions), substitute ``${env:...}``, and resolve :class:`~harkd.settings.Settings`.

The schema is assembled here, above the parts, because the parts own their sections
(``sessions``, ``tools``, ``mcp``, ``cluster``, ``homeassistant``, ``telemetry``);
:mod:`harkd.settings` stays an inert table and value.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import durations, secrets, settings, yamlfile
from .errors import ConfigError, ConfigErrors, Position
from .settings import Settings
from .yamlfile import Positions

if TYPE_CHECKING:
    import jsonschema


def load(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: command line over ``HARKD_*`` over ``harkd.yaml`` over defaults.

    ``overrides`` maps setting attributes (``listen``, ``pipelines``, ...) to values from
    the command line; ``None`` values are ignored.
    """
    env = os.environ if environ is None else environ
    path = find_config(config, env)
    data = read_config(path, env) if path is not None else {}
    return settings.from_data(data, path, overrides, env)


def find_config(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, then ``HARKD_CONFIG``, then ``./harkd.yaml``, then ``/etc/harkd``."""
    if explicit:
        return Path(explicit)
    if environ.get("HARKD_CONFIG"):
        return Path(environ["HARKD_CONFIG"])
    for candidate in (Path("harkd.yaml"), Path("/etc/harkd/harkd.yaml")):
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read, validate and substitute one ``harkd.yaml``; raises ConfigErrors."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read config: {exc.strerror}",
                                        Position(name))]) from None
    try:
        data, positions = yamlfile.load(name, yamlfile.read_text(name, raw))
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    if data is None:
        return {}
    errors = validate_config(data, positions)
    if errors:
        raise ConfigErrors(errors)
    data, env_errors = secrets.substitute(data, positions, environ)
    if env_errors:
        raise ConfigErrors(env_errors)
    assert isinstance(data, dict)
    return data


def validate_config(data: Any, positions: Positions) -> list[ConfigError]:
    """Every schema error of one ``harkd.yaml`` document, each with its position.

    jsonschema and the pipeline model are imported here, not with this module: without a
    ``harkd.yaml`` (``harkd ask``, ``harkd invoke``) nothing is validated."""
    from .core.validate import errors_of

    return errors_of(_validator(), data, positions)


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(config_schema())


DEPLOYMENT = {
    "type": "object",
    "description": "One deployment of an alias: `local: NAME` (the embedded model) or "
                   "`model: PROVIDER/NAME` (openai/ and ollama/ go straight to the server; "
                   "other providers go through LiteLLM).",
    "properties": {
        "local": {"type": "string", "description": "Embedded llama.cpp model, e.g. gemma-3-270m."},
        "model": {"type": "string", "pattern": r"^[^/\s]+/.+$",
                  "description": "PROVIDER/NAME, e.g. openai/gpt-4o-mini or ollama/llama3.2."},
        "api_base": {"type": "string", "description": "Base URL of the server."},
        "api_key": {"type": "string", "description": "API key; use ${env:NAME}."},
        "weight": {"type": "number", "exclusiveMinimum": 0,
                   "description": "Share of traffic among entries of one tier."},
        "tier": {"type": "integer", "minimum": 0,
                 "description": "Fallback tier; entries of one tier share load by weight."},
        "timeout": {**durations.SCHEMA, "description": "Total time for one call."},
        "first_token_timeout": {**durations.SCHEMA,
                                "description": "Time to the first streamed token."},
        "rpm": {"type": "integer", "minimum": 1, "description": "Requests per minute."},
        "tpm": {"type": "integer", "minimum": 1, "description": "Tokens per minute."},
        "max_concurrent": {"type": "integer", "minimum": 1},
        "params": {"type": "object", "description": "Extra parameters sent with each request."},
        "cloud": {"type": "boolean", "description": "Override whether allow_cloud: false "
                  "excludes it (default: true unless local: or api_base is a private host)."},
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["local"]}, {"required": ["model"]}],
}

CACHE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Response caching (off unless an alias or an llm step turns it on).",
    "properties": {
        "store": {"enum": ["memory", "sqlite", "redis"], "default": "memory",
                  "description": "memory, sqlite in the state folder (survives restarts), "
                                 "or redis (shared by the replicas of a cluster)."},
        "ttl": {"type": ["string", "number"], "default": "10m",
                "description": "How long an answer is reused."},
        "max_entries": {"type": "integer", "minimum": 1, "default": 1000},
        "aliases": {"type": "array", "items": {"type": "string"},
                    "description": "Aliases whose calls are cached by default."},
    },
}

ROUTER = {
    "type": "object",
    "description": "Defaults for every deployment.",
    "properties": {
        "cache": CACHE,
        "timeout": {**durations.SCHEMA, "default": "30s"},
        "first_token_timeout": {**durations.SCHEMA, "default": "15s"},
        "retries": {"type": "integer", "minimum": 0, "default": 2},
        "cooldown": {**durations.SCHEMA, "default": "30s"},
        "failures": {"type": "integer", "minimum": 1, "default": 3,
                     "description": "Consecutive failures that start a cooldown."},
        "queue_timeout": {**durations.SCHEMA, "default": "10s",
                          "description": "Longest a call waits for a free slot."},
        "queue": {"type": "integer", "minimum": 0, "default": 1024,
                  "description": "Calls that may wait for a slot at once."},
        "backoff": {**durations.SCHEMA, "default": "250ms",
                    "description": "First retry delay; doubles each retry, with jitter."},
        "max_backoff": {**durations.SCHEMA, "default": "8s"},
        "max_retry_after": {**durations.SCHEMA, "default": "10s",
                            "description": "Longer Retry-After: move on to the next "
                                           "deployment and hold this one out that long."},
    },
    "additionalProperties": True,
}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of ``harkd.yaml``, from the settings table and the parts' sections."""
    from .core.schema import BASE, DRAFT

    props: dict[str, Any] = {}
    for s in settings.TABLE:
        node = props
        *parents, leaf = s.key.split(".")
        for p in parents:
            section = node.setdefault(p, {"type": "object", "properties": {},
                                          "additionalProperties": False})
            node = section["properties"]
        node[leaf] = {**s.schema, "description": s.help, "default": s.default}
    props["models"] = {
        "type": "object",
        "description": "Alias -> ordered deployments: a fallback chain.",
        "additionalProperties": {"type": "array", "minItems": 1, "items": DEPLOYMENT},
    }
    props["router"] = ROUTER
    from .sessions import SCHEMA as SESSIONS
    from .tools.loop import SCHEMA as TOOLS

    props["tools"] = TOOLS
    from .tools.mcp_client import SCHEMA as MCP

    props["mcp"] = MCP
    props["sessions"] = SESSIONS
    from .cluster import SCHEMA as CLUSTER

    props["cluster"] = CLUSTER
    from .tools.homeassistant import SCHEMA as HOMEASSISTANT

    props["homeassistant"] = HOMEASSISTANT
    from .telemetry import SCHEMA as TELEMETRY

    props["telemetry"] = TELEMETRY
    return {
        "$schema": DRAFT,
        "$id": BASE + "harkd.schema.json",
        "title": "harkd settings",
        "type": ["object", "null"],
        "properties": props,
        "additionalProperties": True,
    }
