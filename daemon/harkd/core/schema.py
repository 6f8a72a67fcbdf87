"""Generate the JSON Schemas (draft 2020-12) of pipeline files and ``harkd.yaml``.

Both come from the registry and the settings table, never by hand, so a plugin's step is
validated and autocompleted like a built-in one. ``schemas/*.json`` in the repository are
these functions' output; a test fails if they drift.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

from .. import durations
from .pipeline import ON_ERROR_SCHEMA, Concurrency, Retry
from .registry import K, Kinds, Registry, UnknownKind

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


def pipeline_schema(registry: Registry, steps: Iterable[str] | None = None,
                    triggers: Iterable[str] | None = None) -> dict[str, Any]:
    """The schema of a pipeline file with every kind of ``registry``; with ``steps`` and
    ``triggers``, with just those kinds (those the registry knows), which imports no
    other: a document that names no other kind is valid under it exactly when it is
    valid under the whole schema (each kind is a property of its own, and ``oneOf``
    counts only the kinds a step names)."""
    step_kinds = _kinds(registry.steps, steps)
    trigger_kinds = _kinds(registry.triggers, triggers)
    step_props: dict[str, Any] = {name: kind.schema() for name, kind in step_kinds}
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
    kinds = [name for name, _ in step_kinds]
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
                "properties": {name: kind.schema() for name, kind in trigger_kinds},
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


def _kinds(kinds: Kinds[K], names: Iterable[str] | None) -> list[tuple[str, K]]:
    """``kinds`` by name, all or the ``names`` it knows (a kind that fails to import is
    left out, as it is from the whole registry)."""
    if names is None:
        return sorted(kinds.items())
    found = []
    for name in sorted(set(names) & kinds.known()):
        with contextlib.suppress(UnknownKind):
            found.append((name, kinds[name]))
    return found


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



def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
