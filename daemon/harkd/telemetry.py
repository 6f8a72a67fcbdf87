"""Optional OpenTelemetry traces: a span per run and per step, GenAI attributes per LLM call.

``telemetry: {endpoint: http://COLLECTOR:4318/v1/traces}`` in ``harkd.yaml`` turns it on;
without it nothing here runs and ``opentelemetry`` is never imported (this module is the
inert configuration plus :class:`Tracer`, which imports the SDK when it is built).

Spans are made when a run ends, from what the run recorded (its start, each step's start,
duration and path), so tracing adds nothing to a run while it runs and needs no hooks in
the engine. Nested steps (``2.map[3].0``) become children of their parent step's span. An
``llm`` step gets a child span named ``chat MODEL`` per attempt (a fallback shows as a
failed one, then the one that answered) with the GenAI semantic-convention attributes
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``). Inputs, outputs and message
bodies stay out of spans unless ``capture_content: true``; then the run's input and output
go in, redacted and cut to :data:`MAX_CONTENT` characters. Export runs in the SDK's batch
thread, off the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .records import dataclass
from .secrets import REDACTOR

if TYPE_CHECKING:
    from aiohttp import web

    from .core.run import Run, RunResult, StepRecord
    from .http.host import Host

MAX_CONTENT = 4096
SHARED_KEY = "telemetry"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Export OpenTelemetry traces over OTLP/HTTP: a span per run and per "
                   "step, GenAI attributes per LLM call. Off unless this section is present.",
    "additionalProperties": False,
    "required": ["endpoint"],
    "properties": {
        "endpoint": {"type": "string", "pattern": "^https?://",
                     "description": "The collector's OTLP/HTTP traces URL.",
                     "examples": ["http://127.0.0.1:4318/v1/traces"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Headers sent with each export (an API key: use "
                                   "${env:...})."},
        "service_name": {"type": "string", "default": "harkd"},
        "capture_content": {"type": "boolean", "default": False,
                            "description": "Put runs' inputs and outputs (redacted) in "
                                           "spans."},
        "sample": {"type": "number", "minimum": 0, "maximum": 1, "default": 1,
                   "description": "The share of runs traced."},
    },
}


@dataclass(frozen=True)
class TelemetryConfig:
    """The ``telemetry`` section of ``harkd.yaml``."""

    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    service_name: str = "harkd"
    capture_content: bool = False
    sample: float = 1.0


def config(extra: Mapping[str, Any]) -> TelemetryConfig | None:
    """The ``telemetry`` section (``settings.extra``), or None when it is absent."""
    raw = extra.get("telemetry")
    if not raw:
        return None
    return TelemetryConfig(endpoint=str(raw["endpoint"]),
                           headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
                           service_name=str(raw.get("service_name", "harkd")),
                           capture_content=bool(raw.get("capture_content", False)),
                           sample=float(raw.get("sample", 1.0)))


def setup(app: web.Application, daemon: Host) -> None:
    """With ``telemetry:`` configured, trace the daemon's runs (once per daemon, however
    many apps it builds) and export what is queued when the app shuts down."""
    conf = config(daemon.settings.extra)
    if conf is None or SHARED_KEY in daemon.services.shared:
        return
    tracer = daemon.services.shared[SHARED_KEY] = Tracer(conf)
    daemon.services.observers.append(tracer)

    async def flush(_app: web.Application) -> None:
        import asyncio

        await asyncio.to_thread(tracer.shutdown)

    app.on_cleanup.append(flush)


def parent_path(path: str, known: Mapping[str, Any]) -> str | None:
    """The path of the step that holds ``path`` (``2.map[3].0`` -> ``2``), if recorded."""
    parts = path.split(".")
    for k in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in known:
            return candidate
    return None


def _split_model(label: str) -> tuple[str, str]:
    """``openai/gpt-4o`` -> (openai, gpt-4o); ``local:gemma`` -> (local, gemma)."""
    for sep in ("/", ":"):
        if sep in label:
            provider, _, model = label.partition(sep)
            return provider, model
    return "unknown", label


def _content(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return REDACTOR(text)[:MAX_CONTENT]


class Tracer:
    """A run observer that turns each finished run into spans.

    ``exporter`` replaces the OTLP exporter (tests pass the SDK's in-memory one; it is then
    flushed at once rather than batched). Call :meth:`shutdown` to export what is queued.
    """

    def __init__(self, conf: TelemetryConfig, exporter: Any = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        from . import __version__

        if not 0.0 <= conf.sample <= 1.0:
            raise ValueError("sample must be between 0 and 1")
        self.conf = conf
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": conf.service_name,
                                      "service.version": __version__}),
            sampler=TraceIdRatioBased(conf.sample), shutdown_on_exit=False)
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=conf.endpoint, headers=dict(conf.headers))
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("harkd", __version__)

    def run_started(self, run: Run) -> None:
        return None

    def run_finished(self, run: Run, result: RunResult) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        kind = str(run.trigger.get("kind") or "")
        start = int(run.started * 1e9)
        attributes: dict[str, Any] = {
            "harkd.pipeline": run.pipeline.name, "harkd.pipeline.version": run.pipeline.version,
            "harkd.run.id": run.id, "harkd.trigger": kind, "harkd.run.status": result.status}
        if kind in ("http", "api"):
            attributes["http.response.status_code"] = result.http_status
        if self.conf.capture_content:
            attributes["harkd.run.input"] = _content(run.input)
            if result.output is not None:
                attributes["harkd.run.output"] = _content(result.output)
        root = self.tracer.start_span(
            f"run {run.pipeline.name}", start_time=start, attributes=attributes,
            kind=SpanKind.SERVER if kind in ("http", "websocket", "api") else SpanKind.INTERNAL)
        if not result.ok:
            root.set_status(Status(StatusCode.ERROR, result.error or result.status))
        spans: dict[str, Any] = {}
        # The run's length is timed from its admission and each step's start is a wall
        # clock stamp, so a last step can seem to end a few hundred ns after its run: the
        # run's span is stretched to cover its steps.
        end = start + int(result.duration * 1e9)
        for record in run.steps:
            path = getattr(record, "path", "") or str(record.index)
            parent = spans.get(parent_path(path, spans) or "", root)
            spans[path] = span = self._step(record, path, trace.set_span_in_context(parent))
            end = max(end, span.end_time or end)
        root.end(end_time=end)

    def _step(self, record: StepRecord, path: str, context: Any) -> Any:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        start = int(record.started * 1e9)
        end = start + int(record.duration * 1e9)
        attributes: dict[str, Any] = {"harkd.step.path": path, "harkd.step.kind": record.kind,
                                      "harkd.step.status": record.status}
        if record.name:
            attributes["harkd.step.name"] = record.name
        span = self.tracer.start_span(f"step {path} {record.kind}", context=context,
                                      start_time=start, attributes=attributes)
        if record.status == "error":
            span.set_status(Status(StatusCode.ERROR))
        if record.kind == "llm" and isinstance(record.detail.get("deployment"), str):
            self._calls(record.detail, trace.set_span_in_context(span), start, end)
        span.end(end_time=end)
        return span

    def _calls(self, detail: dict[str, Any], context: Any, start: int, end: int) -> None:
        """A ``chat MODEL`` client span per attempt of the call (a fallback shows as a
        failed span, then the one that answered). The record keeps each attempt's length,
        not its start, so the attempts are laid end to end, the last ending with the step;
        usage goes on the attempt that answered."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        attempts = [a for a in detail.get("attempts") or () if isinstance(a, dict)] or [
            {"deployment": detail["deployment"], "outcome": "ok",
             "latency_ms": detail.get("latency_ms") or 0}]
        spans = []
        for a in reversed(attempts):
            took = int(float(a.get("latency_ms") or 0) * 1e6)
            spans.append((a, max(start, end - took), end))
            end = max(start, end - took)
        for a, t0, t1 in reversed(spans):
            provider, model = _split_model(str(a.get("deployment", "")))
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                "gen_ai.request.model": model, "harkd.llm.alias": str(detail.get("alias", "")),
                "harkd.llm.outcome": str(a.get("outcome", ""))}
            ok = a.get("outcome") == "ok"
            if ok:
                attributes.update({
                    "gen_ai.usage.input_tokens": int(detail.get("prompt_tokens") or 0),
                    "gen_ai.usage.output_tokens": int(detail.get("completion_tokens") or 0),
                    "harkd.llm.fallbacks": int(detail.get("fallbacks") or 0)})
                if detail.get("cached"):
                    attributes["harkd.llm.cached"] = True
            else:
                attributes["error.type"] = str(a.get("status") or a.get("outcome") or "error")
            chat = self.tracer.start_span(f"chat {model}", context=context, start_time=t0,
                                          kind=SpanKind.CLIENT, attributes=attributes)
            if not ok:
                chat.set_status(Status(StatusCode.ERROR, str(a.get("error") or "")))
            chat.end(end_time=t1)

    def shutdown(self) -> None:
        """Export the spans still queued and stop (the daemon is stopping)."""
        self.provider.shutdown()
