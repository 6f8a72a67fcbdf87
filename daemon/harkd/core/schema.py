"""Generate the JSON Schemas (draft 2020-12) of pipeline files and ``harkd.yaml``.

Both come from the registry and the settings table, never by hand, so a plugin's step is
validated and autocompleted like a built-in one. ``schemas/*.json`` in the repository are
these functions' output; a test fails if they drift.
"""

from __future__ import annotations

import json
from typing import Any

from .. import durations, settings
from .pipeline import ON_ERROR_SCHEMA, Concurrency, Retry
from .registry import Registry

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://harkd.dev/schemas/"


#: a pipeline's ``mcp:`` block: it becomes a tool on harkd's own MCP server (/mcp)
PIPELINE_MCP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Offer this pipeline as a tool on harkd's MCP server (POST /mcp).",
    "properties": {
        "tool": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                 "description": "The tool's name (default: the pipeline's, - as _)."},
        "description": {"type": "string", "description": "What the tool does, for the model."},
        "input_schema": {"type": "object",
                         "description": "JSON Schema of the arguments, which become the "
                                        "run's input. Default: {input: string}, and the "
                                        "input is that string."},
    },
}


def pipeline_schema(registry: Registry) -> dict[str, Any]:
    step_props: dict[str, Any] = {
        name: kind.schema() for name, kind in sorted(registry.steps.items())
    }
    step_props["as"] = {
        "type": "string",
        "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
        "description": "Store this step's output in vars.NAME.",
    }
    step_props["when"] = {
        "type": ["string", "boolean"],
        "description": "A Jinja expression; the step is skipped (its input passes on) "
                       "unless it is true.",
    }
    step_props["retry"] = Retry.SCHEMA
    step_props["on_error"] = ON_ERROR_SCHEMA
    kinds = sorted(registry.steps)
    step = {
        "type": "object",
        "description": "One step: a one-key mapping {STEP: params}, with optional as, when, "
                       "retry and on_error.",
        "properties": step_props,
        "additionalProperties": False,
        "oneOf": [{"required": [k]} for k in kinds],
    }
    return {
        "$schema": DRAFT,
        "$id": BASE + "pipeline.schema.json",
        "title": "harkd pipeline",
        "description": "One pipeline per file; its name is the file stem.",
        "type": "object",
        "additionalProperties": False,
        "required": ["trigger", "steps"],
        "properties": {
            "description": {"type": "string"},
            "trigger": {
                "type": "object",
                "description": "What starts a run: exactly one trigger.",
                "properties": {
                    name: kind.schema() for name, kind in sorted(registry.triggers.items())
                },
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
            },
            "concurrency": Concurrency.SCHEMA,
            "timeout": {**durations.SCHEMA, "description": "Longest a run may take."},
            "allow_cloud": {
                "type": "boolean",
                "default": True,
                "description": "false: LLM steps use only local deployments.",
            },
            "steps": {"$ref": "#/$defs/steps"},
            "mcp": PIPELINE_MCP,
            "gateway": {"type": "boolean", "default": False,
                        "description": "true: also a model, pipeline/NAME, on the /v1 "
                                       "gateway (an mcp: block implies it)."},
            "tests": {"type": "array", "items": TEST,
                      "description": "Examples that `harkd test` runs in-process."},
        },
        "$defs": {"step": step, "steps": STEPS},
    }


#: a list of steps; nested kinds (map, parallel, switch, on_error) refer to it
STEPS = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}}

TEST = {
    "type": "object",
    "description": "One test of this pipeline: run it on `input` and check `expect`.",
    "additionalProperties": False,
    "required": ["name", "expect"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "input": {"description": "The run's input (default: null)."},
        "trigger": {"type": "object", "description": "The run's `trigger` data (headers, "
                                                     "query, ...)."},
        "models": {
            "type": "object",
            "description": "Canned answers for llm steps by model alias: one reply, or a "
                           "list taken in turn (the last repeats). No model is called.",
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array",
                                                                       "minItems": 1}]},
        },
        "steps": {"type": "object",
                  "description": "Outputs of named steps (`as: NAME`) to use instead of "
                                 "running them, e.g. an http call."},
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "output": {"description": "The output equals this."},
                "contains": {"description": "The output (as text) contains this, or the "
                                            "output list holds it."},
                "matches": {"type": "string", "description": "A regular expression that "
                                                             "the output (as text) matches."},
                "error": {"type": "string", "description": "The run fails with an error "
                                                           "that contains this."},
                "vars": {"type": "object", "description": "After the run, vars.NAME "
                                                          "equals each value."},
            },
        },
    },
}



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
    from ..sessions import SCHEMA as SESSIONS
    from ..tools.loop import SCHEMA as TOOLS

    props["tools"] = TOOLS
    from ..tools.mcp_client import SCHEMA as MCP

    props["mcp"] = MCP
    props["sessions"] = SESSIONS
    from ..cluster import SCHEMA as CLUSTER

    props["cluster"] = CLUSTER
    from ..tools.homeassistant import SCHEMA as HOMEASSISTANT

    props["homeassistant"] = HOMEASSISTANT
    from ..telemetry import SCHEMA as TELEMETRY

    props["telemetry"] = TELEMETRY
    return {
        "$schema": DRAFT,
        "$id": BASE + "harkd.schema.json",
        "title": "harkd settings",
        "type": ["object", "null"],
        "properties": props,
        "additionalProperties": True,
    }


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
