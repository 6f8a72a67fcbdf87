"""The OpenAPI 3.1 document of the admin API (``GET /api/openapi.json``).

Written by hand next to the handlers in :mod:`harkd.http.api`; ``tests/http/test_api.py``
checks that every ``/api`` route is in it and that real answers validate against its
schemas.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}, "run_id": {"type": "string"}},
    }},
}

_POSITIONED = {
    "type": "object",
    "required": ["file", "line", "column", "pointer", "message"],
    "properties": {
        "file": {"type": "string"}, "line": {"type": "integer"},
        "column": {"type": "integer"}, "pointer": {"type": "string"},
        "message": {"type": "string"},
    },
}

_PIPELINE = {
    "type": "object",
    "required": ["name", "file", "state", "trigger", "version", "loaded_at", "errors"],
    "properties": {
        "name": {"type": "string"},
        "file": {"type": "string"},
        "state": {"enum": ["active", "stale", "rejected"]},
        "description": {"type": "string"},
        "trigger": {"type": ["object", "null"],
                    "description": "The trigger's description: kind, path or schedule, "
                                   "next_fire for cron.",
                    "properties": {"kind": {"type": "string"}}},
        "version": {"type": "integer"},
        "loaded_at": {"type": "number"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ConfigError"}},
    },
}

_STATUS = {"enum": ["ok", "error", "cancelled", "busy", "running", "interrupted"]}

_RUN_SUMMARY = {
    "type": "object",
    "required": ["id", "seq", "pipeline", "version", "trigger", "started", "status",
                 "duration_ms", "error", "http_status"],
    "properties": {
        "id": {"type": "string"},
        "seq": {"type": "integer", "description": "Position in the log (pagination)."},
        "pipeline": {"type": "string"},
        "version": {"type": "integer"},
        "trigger": {"type": ["string", "null"], "description": "The trigger kind."},
        "started": {"type": "number", "description": "Unix time."},
        "status": _STATUS,
        "duration_ms": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "http_status": {"type": ["integer", "null"]},
    },
}

_STEP = {
    "type": "object",
    "required": ["index", "kind", "started", "duration_ms", "status"],
    "properties": {
        "index": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"},
        "started": {"type": "number"}, "duration_ms": {"type": "number"},
        "status": {"type": "string"},
        "detail": {"description": "What the step recorded (llm: deployment, tokens, "
                                  "fallbacks)."},
    },
}

_RUN = {
    "allOf": [{"$ref": "#/components/schemas/RunSummary"}],
    "type": "object",
    "required": ["input", "output", "truncated", "steps", "llm", "trigger_data"],
    "properties": {
        "trigger_data": {"description": "The trigger's data (headers without credentials)."},
        "input": {"description": "The run's input (redacted; a string if truncated)."},
        "output": {"description": "The run's output (redacted; a string if truncated)."},
        "truncated": {"type": "boolean"},
        "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
        "llm": {"type": "array", "items": {"type": "object"},
                "description": "The detail of each llm step."},
    },
}


_DEPLOYMENT = {
    "type": "object",
    "required": ["deployment", "provider", "tier", "weight", "cloud", "breaker", "health",
                 "failures", "cooldown_left", "active"],
    "properties": {
        "deployment": {"type": "string", "description": "The entry as written in models:."},
        "provider": {"type": "string"}, "tier": {"type": "integer"},
        "weight": {"type": "number"}, "cloud": {"type": "boolean"},
        "breaker": {"enum": ["closed", "open", "half_open"]},
        "health": {"enum": ["ok", "failing", "cooling", "probing"],
                   "description": "ok; failing (failed lately, still in rotation); cooling "
                                  "(breaker open); probing (one trial call allowed)."},
        "failures": {"type": "integer", "description": "Consecutive failures."},
        "cooldown_left": {"type": "number", "description": "Seconds until a probe."},
        "active": {"type": ["integer", "null"],
                   "description": "Calls in flight (deployments with limits)."},
        "limits": {"type": "object"}, "timeout": {"type": "number"},
    },
}

_ROUTER = {
    "type": "object",
    "required": ["aliases", "open_breakers", "recent_errors", "inflight", "policy"],
    "properties": {
        "aliases": {"type": "object", "description": "Each alias's deployments in order.",
                    "additionalProperties": {"type": "array",
                                             "items": {"$ref": "#/components/schemas/"
                                                               "Deployment"}}},
        "open_breakers": {"type": "array", "items": {
            "type": "object", "required": ["alias", "deployment", "cooldown_left"],
            "properties": {"alias": {"type": "string"}, "deployment": {"type": "string"},
                           "cooldown_left": {"type": "number"}}}},
        "recent_errors": {"type": "array", "description": "The latest failed attempts, "
                          "newest first.", "items": {
                              "type": "object",
                              "required": ["at", "alias", "deployment", "outcome", "error"],
                              "properties": {"at": {"type": "number"},
                                             "alias": {"type": "string"},
                                             "deployment": {"type": "string"},
                                             "attempt": {"type": "integer"},
                                             "outcome": {"type": "string"},
                                             "status": {"type": ["integer", "null"]},
                                             "error": {"type": "string"}}}},
        "inflight": {"type": "integer"},
        "policy": {"type": "object", "description": "The router: settings in effect."},
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"application/json": {"schema": schema}} if schema else {}
    return {"description": description, **({"content": body} if body else {})}


_ERRORS = {"401": _answer("Missing or invalid bearer token.", _ref("Error"))}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def document(version: str) -> dict[str, Any]:
    """The OpenAPI document of this harkd's admin API."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "harkd admin API", "version": version,
                 "description": "Pipelines, their states and errors, the run log, the "
                                "router's health, reload."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "server.token, when configured."}},
            "schemas": {"Error": _ERROR, "ConfigError": _POSITIONED, "Pipeline": _PIPELINE,
                        "RunSummary": _RUN_SUMMARY, "Step": _STEP, "Run": _RUN,
                        "Deployment": _DEPLOYMENT, "Router": _ROUTER},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/pipelines": {"get": {
                "summary": "Every pipeline with its state and positioned errors.",
                "responses": {"200": _answer("The pipelines.", {
                    "type": "object", "required": ["pipelines", "counts"],
                    "properties": {
                        "pipelines": {"type": "array", "items": _ref("Pipeline")},
                        "counts": {"type": "object",
                                   "additionalProperties": {"type": "integer"}}}}),
                              **_ERRORS}}},
            "/api/pipelines/{name}": {"get": {
                "summary": "One pipeline.", "parameters": [_NAME],
                "responses": {"200": _answer("The pipeline.", _ref("Pipeline")),
                              "404": _answer("No such pipeline.", _ref("Error")), **_ERRORS}}},
            "/api/pipelines/{name}/run": {"post": {
                "summary": "Run a pipeline now; the body (or its `input` key) is the input.",
                "parameters": [_NAME],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {}}}},
                "responses": {"200": {"description": "The run's output: text/plain for a "
                                      "string, JSON otherwise; X-Harkd-Run-Id names the run. "
                                      "With Accept: text/event-stream, server-sent events: "
                                      "delta events while a step streams, then result or "
                                      "error.",
                                      "content": {"application/json": {"schema": {}},
                                                  "text/plain": {"schema": {"type": "string"}},
                                                  "text/event-stream": {
                                                      "schema": {"type": "string"}}}},
                              "404": _answer("No active pipeline of that name.", _ref("Error")),
                              "4XX": _answer("The run failed or was refused.", _ref("Error")),
                              "5XX": _answer("The run failed.", _ref("Error")), **_ERRORS}}},
            "/api/reload": {"post": {
                "summary": "Rescan harkd.yaml and every pipeline file (as SIGHUP does).",
                "responses": {"200": _answer("Reloaded.", {
                    "type": "object", "required": ["status", "counts"],
                    "properties": {"status": {"const": "reloaded"},
                                   "counts": {"type": "object"}}}), **_ERRORS}}},
            "/api/runs": {"get": {
                "summary": "The run log, newest first.",
                "parameters": [
                    {"name": "pipeline", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "schema": _STATUS},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                "default": 50}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "The next_cursor of the previous page."},
                    {"name": "since", "in": "query", "schema": {"type": "number"},
                     "description": "Runs started at or after this Unix time."},
                    {"name": "until", "in": "query", "schema": {"type": "number"},
                     "description": "Runs started before this Unix time."},
                ],
                "responses": {"200": _answer("A page of runs.", {
                    "type": "object", "required": ["runs", "next_cursor"],
                    "properties": {"runs": {"type": "array", "items": _ref("RunSummary")},
                                   "next_cursor": {"type": ["string", "null"]}}}),
                              "400": _answer("A bad filter.", _ref("Error")), **_ERRORS}}},
            "/api/runs/{id}": {"get": {
                "summary": "One run: input, output, steps and LLM details.",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _answer("The run.", _ref("Run")),
                              "404": _answer("Not in the run log.", _ref("Error")),
                              **_ERRORS}}},
            "/api/router": {"get": {
                "summary": "The router: each alias's deployments with health, breaker and "
                           "cooldown, open breakers, recent errors, the policy.",
                "responses": {"200": _answer("The router's state.", _ref("Router")),
                              **_ERRORS}}},
            "/api/openapi.json": {"get": {
                "summary": "This document.",
                "responses": {"200": _answer("The OpenAPI document.", {"type": "object"})}}},
        },
    }
