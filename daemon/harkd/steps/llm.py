"""The ``llm`` step: one chat call through the daemon's router.

The prompt is ``prompt`` (a template), or ``messages``, or else the step's input. The
output is the answer's text; with ``stream: true`` a :class:`~harkd.streams.TextStream`
(chunks reach WebSocket and SSE clients and ``tts`` as they come); with ``json_schema``
the parsed, validated value. ``tools`` runs the tool loop; ``session`` keeps memory.
Every call's alias, deployment, attempts, latency, time to first token and tokens are
recorded on the step's run-log record.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import StepKind
from ..errors import HarkError, StepError
from ..records import dataclass
from ..streams import TextStream
from ..templates import Renderable

if TYPE_CHECKING:
    from ..contracts import Router
    from ..core.pipeline import Build
    from ..core.run import Run, StepRecord
    from ..router import ChatRequest, ChatResponse
    from ..tools import Tool


@dataclass(frozen=True)
class ToolRef:
    """A tool as the step names it: a registered tool, a pipeline used as one, or an MCP
    server's tools (``mcp``: ``NAME`` or ``NAME/TOOL``)."""

    name: str
    pipeline: str | None = None
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    mcp: str | None = None


@dataclass(frozen=True, eq=False)
class LLMStep:
    """One compiled ``llm`` step; see the module docstring."""

    model: str
    system: Renderable | None
    prompt: Renderable | None
    messages: tuple[tuple[str, Renderable], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    json_schema: Mapping[str, Any] | None = None
    tools: tuple[ToolRef, ...] = ()
    max_tool_rounds: int | None = None
    tool_timeout: float | None = None
    session: Renderable | None = None
    session_budget: int | None = None
    allow_cloud: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    cache: bool | float | None = None

    async def __call__(self, run: Run, data: Any) -> Any:
        from ..router import ChatRequest

        ctx = run.context(data)
        record = run.step
        system = [{"role": "system", "content": str(self.system.render(ctx))}] \
            if self.system is not None else []
        new: list[dict[str, Any]] = [{"role": role, "content": str(t.render(ctx))}
                                     for role, t in self.messages]
        if self.prompt is not None:
            new.append({"role": "user", "content": str(self.prompt.render(ctx))})
        elif not self.messages:
            new.append({"role": "user", "content": _as_prompt(data)})
        key = str(self.session.render(ctx)) if self.session is not None else None
        messages = await self._with_history(run, key, system, new)
        request = ChatRequest(
            model=self.model, messages=tuple(messages), temperature=self.temperature,
            max_tokens=self.max_tokens, stop=self.stop, json_schema=self.json_schema,
            allow_cloud=self.allow_cloud and run.pipeline.allow_cloud, params=self.params,
            origin={"pipeline": run.pipeline.name, "run_id": run.id}, cache=self.cache)
        router = run.services.router
        if key is not None:
            record.detail["session"] = key
        try:
            if self.tools:
                text: Any = await self._with_tools(run, router, request, record)
            elif self.json_schema is not None:
                return await self._structured(router, request, record, run, key, new)
            elif self.stream:
                return TextStream(self._streamed(run, router, request, record, key, new))
            else:
                resp = await router.complete(request)
                record.detail.update(resp.detail())
                text = resp.text
        except HarkError as exc:
            raise _step_error(exc) from None
        await self._remember(run, key, new, text)
        return TextStream(_once(text)) if self.stream else text

    async def _with_history(self, run: Run, key: str | None, system: list[dict[str, Any]],
                            new: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if key is None:
            return [*system, *new]
        from ..sessions import fit, store_for

        store = store_for(run.services)
        budget = self.session_budget or store.budget
        return fit(system, await store.load(key, budget), new, budget)

    async def _remember(self, run: Run, key: str | None, new: list[dict[str, Any]],
                        answer: Any) -> None:
        if key is None:
            return
        from ..sessions import store_for
        from ..voice import TURN_GATE

        gate = run.extra.get(TURN_GATE)
        if gate is not None:
            await gate.wait()  # a speculative voice turn is remembered once it is real
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        await store_for(run.services).save(key, [*new, {"role": "assistant", "content": text}])

    async def _streamed(self, run: Run, router: Router, request: ChatRequest,
                        record: StepRecord, key: str | None, new: list[dict[str, Any]]
                        ) -> AsyncIterator[str]:
        stream = router.stream(request)
        try:
            async for chunk in stream:
                yield chunk
        except HarkError as exc:
            raise _step_error(exc) from None
        finally:
            await stream.aclose()
        if stream.response is not None:
            record.detail.update(stream.response.detail())
            await self._remember(run, key, new, stream.response.text)

    async def _structured(self, router: Router, request: ChatRequest, record: StepRecord,
                          run: Run, key: str | None, new: list[dict[str, Any]]) -> Any:
        import dataclasses

        import jsonschema

        assert self.json_schema is not None
        validator = jsonschema.Draft202012Validator(dict(self.json_schema))
        resp = await router.complete(request)
        calls: list[ChatResponse] = [resp]
        value, problem = _parse_json(resp.text, validator)
        if problem is not None:
            retry = dataclasses.replace(request, messages=(
                *request.messages, {"role": "assistant", "content": resp.text},
                {"role": "user", "content": f"That is not valid: {problem}. Reply with only "
                 "a JSON value that matches this JSON Schema: "
                 + json.dumps(self.json_schema)}))
            resp = await router.complete(retry)
            calls.append(resp)
            value, problem = _parse_json(resp.text, validator)
        record.detail.update(resp.detail())
        record.detail["json_retries"] = len(calls) - 1
        if problem is not None:
            raise StepError(f"model alias {self.model!r} did not answer with JSON matching "
                            f"json_schema after one retry: {problem}", status=502)
        await self._remember(run, key, new, value)
        return value

    async def _with_tools(self, run: Run, router: Router, request: ChatRequest,
                          record: StepRecord) -> str:
        from ..tools import ToolContext
        from ..tools.loop import DEFAULT_ROUNDS, DEFAULT_TIMEOUT, run_loop

        conf = run.services.settings.extra.get("tools") or {}
        tools = {t.name: _resolve(t) for t in self.tools if t.mcp is None}
        if any(t.mcp is not None for t in self.tools):
            await _add_mcp_tools(run, self.tools, tools, record)
        ctx = ToolContext(run.services, run, conf)
        rounds = self.max_tool_rounds or int(conf.get("max_rounds", DEFAULT_ROUNDS))
        timeout = self.tool_timeout or durations.seconds(conf.get("timeout", DEFAULT_TIMEOUT))
        result = await run_loop(router, request, tools, ctx, max_rounds=rounds,
                                timeout=timeout)
        record.detail.update(result.response.detail())
        record.detail["tool_rounds"] = result.rounds
        record.detail["tool_calls"] = [c.as_dict() for c in result.calls]
        record.detail["calls"] = len(result.responses)
        return result.response.text


async def _once(text: str) -> AsyncIterator[str]:
    yield text


def _as_prompt(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, Mapping) and isinstance(data.get("text"), str):
        return str(data["text"])
    return json.dumps(data, ensure_ascii=False, default=str)


def _step_error(exc: HarkError) -> StepError:
    if isinstance(exc, StepError):
        return exc
    status = getattr(exc, "status", 502)
    return StepError(str(exc), status=status if isinstance(status, int) else 502)


def _parse_json(text: str, validator: Any) -> tuple[Any, str | None]:
    """The JSON value in a model's answer (fences and chatter around it are dropped),
    and the first problem with it or None."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(body.rfind("}"), body.rfind("]"))
        body = body[start:end + 1] if end > start else body[start:]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    error = next(iter(validator.iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return value, f"{error.message}" + (f" at /{where}" if where else "")
    return value, None


async def _add_mcp_tools(run: Run, refs: tuple[ToolRef, ...], tools: dict[str, Tool],
                         record: StepRecord) -> None:
    """Add the MCP tools ``refs`` name to ``tools``. A server that cannot start is
    recorded on the step; a named tool of it is offered as one that answers the error."""
    from ..tools import Tool, ToolError
    from ..tools.mcp_client import clients, split_ref

    group = clients(run.services)
    errors: list[str] = []
    for ref in refs:
        if ref.mcp is None:
            continue
        try:
            tools.update(await group.tools(ref.mcp, tools))
        except ToolError as exc:
            message = str(exc)
            errors.append(message)
            _, only = split_ref(ref.mcp)
            if only is not None:
                async def failing(message: str = message, **_: Any) -> Any:
                    raise ToolError(message)

                tools[only] = Tool(only, f"(unavailable: {message})", {"type": "object"},
                                   failing)
    if errors:
        record.detail["mcp_errors"] = errors


def _resolve(ref: ToolRef) -> Tool:
    from ..tools import available

    if ref.pipeline is not None:
        return pipeline_tool(ref)
    return available()[ref.name]


def pipeline_tool(ref: ToolRef) -> Tool:
    """A pipeline offered to the model as a tool; the arguments are the run's input."""
    from ..tools import Tool, ToolContext, ToolError

    assert ref.pipeline is not None
    name = ref.pipeline
    simple = ref.parameters is None
    parameters = ref.parameters or {
        "type": "object", "required": ["input"], "additionalProperties": False,
        "properties": {"input": {"type": "string", "description": "What to send it."}}}

    async def call(ctx: ToolContext, **args: Any) -> Any:
        catalog = ctx.services.catalog if ctx.services is not None else None
        bound = catalog.bound(name) if catalog is not None else None
        if bound is None or ctx.run is None:
            raise ToolError(f"pipeline {name!r} is not loaded")
        payload = args.get("input") if simple else args
        trigger = {"kind": "tool", "caller": ctx.run.pipeline.name, "caller_run": ctx.run.id}
        child = bound.new_run(payload, trigger, depth=ctx.run.depth + 1)
        result = await bound.run(child)
        if not result.ok:
            raise ToolError(f"pipeline {name} failed: {result.error}")
        return result.output

    return Tool(ref.name, ref.description or f"Run the {name} pipeline.", parameters, call,
                takes_context=True)


def _build(params: dict[str, Any], b: Build) -> LLMStep:
    from ..tools import available

    if "prompt" in params and "messages" in params:
        b.error("messages", "give prompt or messages, not both")
    messages = tuple((str(m["role"]), b.text(f"messages/{i}/content", str(m["content"])))
                     for i, m in enumerate(params.get("messages") or ()))
    schema = params.get("json_schema")
    if schema is not None:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            b.error("json_schema", f"not a valid JSON Schema: {exc.message}")
    refs: list[ToolRef] = []
    known = available()
    mcp_servers = b.settings.get("mcp_servers")
    for i, item in enumerate(params.get("tools") or ()):
        if isinstance(item, str) and item.startswith("mcp:"):
            server = item[4:].partition("/")[0]
            if mcp_servers is not None and server not in mcp_servers:
                b.error(f"tools/{i}", f"unknown MCP server {server!r} (harkd.yaml's "
                        f"mcp.servers has {', '.join(mcp_servers) or 'none'})")
            refs.append(ToolRef(item, mcp=item[4:]))
        elif isinstance(item, str):
            if item not in known:
                close = difflib.get_close_matches(item, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                b.error(f"tools/{i}", f"unknown tool {item!r}{hint} (tools: "
                        f"{', '.join(sorted(known)) or 'none'})")
            refs.append(ToolRef(item))
        else:
            pipe = str(item["pipeline"])
            refs.append(ToolRef(str(item.get("name") or pipe.replace("-", "_")), pipe,
                                str(item.get("description", "")), item.get("parameters")))
    stop = params.get("stop") or ()
    model = str(params.get("model", "default"))
    known_aliases = b.settings.get("aliases")
    if known_aliases is not None and model not in known_aliases:
        close = difflib.get_close_matches(model, known_aliases, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        b.error("model", f"unknown model alias {model!r}{hint} (harkd.yaml's models: has "
                         f"{', '.join(known_aliases)})")
    return LLMStep(
        model=model,
        system=b.text("system", params["system"]) if "system" in params else None,
        prompt=b.text("prompt", params["prompt"]) if "prompt" in params else None,
        messages=messages,
        temperature=params.get("temperature"),
        max_tokens=params.get("max_tokens"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        stream=bool(params.get("stream", False)),
        json_schema=schema,
        tools=tuple(refs),
        max_tool_rounds=params.get("max_tool_rounds"),
        tool_timeout=b.seconds("tool_timeout", params["tool_timeout"])
        if "tool_timeout" in params else None,
        session=b.text("session", params["session"]) if "session" in params else None,
        session_budget=params.get("session_budget"),
        allow_cloud=bool(params.get("allow_cloud", True)),
        params=dict(params.get("params") or {}),
        cache=_cache(params.get("cache"), b),
    )


def _cache(raw: Any, b: Build) -> bool | float | None:
    if raw is None or isinstance(raw, bool):
        return raw
    return b.seconds("cache", raw)


PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "default": "default",
                  "description": "A model alias of harkd.yaml's models: (a fallback chain)."},
        "system": {"type": "string", "description": "The system prompt (a template)."},
        "prompt": {"type": "string",
                   "description": "The user message (a template). Default: the input."},
        "messages": {"type": "array", "description": "Chat messages (contents are templates).",
                     "items": {"type": "object", "required": ["role", "content"],
                               "additionalProperties": False, "properties": {
                                   "role": {"enum": ["system", "user", "assistant"]},
                                   "content": {"type": "string"}}}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "stream": {"type": "boolean", "default": False,
                   "description": "Pass chunks on as they come (to clients and tts)."},
        "json_schema": {"type": "object",
                        "description": "Answer with JSON matching this schema; the output is "
                                       "the parsed value (validated, one retry)."},
        "tools": {"type": "array", "description": "Tools the model may call.", "items": {
            "anyOf": [
                {"type": "string", "description": "A registered tool: time, calculator, "
                                                  "http_get, read_file, or a plugin's; "
                                                  "mcp:NAME (every tool of MCP server "
                                                  "NAME) or mcp:NAME/TOOL."},
                {"type": "object", "required": ["pipeline"], "additionalProperties": False,
                 "properties": {"pipeline": {"type": "string"}, "name": {"type": "string"},
                                "description": {"type": "string"},
                                "parameters": {"type": "object"}}}]}},
        "max_tool_rounds": {"type": "integer", "minimum": 1,
                            "description": "Default tools.max_rounds (5)."},
        "tool_timeout": {**durations.SCHEMA, "description": "Default tools.timeout (10s)."},
        "session": {"type": "string",
                    "description": "Conversation memory key (a template), e.g. "
                                   "\"{{ trigger.headers['X-User'] }}\"."},
        "session_budget": {"type": "integer", "minimum": 1,
                           "description": "Tokens of history to send (default sessions.budget)."},
        "allow_cloud": {"type": "boolean", "default": True,
                        "description": "false: only local deployments (as the pipeline's "
                                       "allow_cloud)."},
        "params": {"type": "object", "description": "Extra request fields sent as they are."},
        "cache": {"anyOf": [{"type": "boolean"}, durations.SCHEMA],
                  "description": "Reuse an identical request's answer: true (router.cache.ttl), "
                                 "a TTL, or false. Default: router.cache.aliases decides."},
    },
}

LLM = StepKind(
    "llm",
    "Ask a model through the router; the output is its answer (text, a stream, or JSON).",
    PARAMS,
    _build,
    shorthand="prompt",
    examples=({"model": "default", "system": "Be brief.", "prompt": "{{ input.text }}"},),
)
