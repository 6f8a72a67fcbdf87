"""OpenTelemetry export: spans per run and step, GenAI attributes per LLM call, no content
unless asked; checked with the SDK's in-memory exporter and over OTLP/HTTP into a scripted
receiver that decodes the protobuf requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harkd.telemetry import TelemetryConfig, Tracer, parent_path
from harkd.testing import run_daemon, serve_app, wait_until
from harkd.testing_upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

PIPE = """\
trigger: {http: {}}
steps:
  - set: {who: "{{ input.name }}"}
  - map: {over: "{{ [1, 2] }}", concurrency: 1, steps: [{template: "n{{ input }}"}]}
  - llm: {model: fast, prompt: "secret question about {{ vars.who }}"}
"""


def _config(upstream: ScriptedUpstream, extra: str = "") -> str:
    return (f"models:\n  fast: [{{model: openai/m1, api_base: '{upstream.v1}'}}]\n{extra}")


async def test_spans_for_a_run_its_steps_and_the_llm_call(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    async with ScriptedUpstream() as up, \
            run_daemon(tmp_path, {"ask": PIPE}, config=_config(up)) as d:
        tracer = Tracer(TelemetryConfig(endpoint="http://unused"), exporter=exporter)
        d.daemon.services.observers.append(tracer)
        async with d.http.post(d.url("/hooks/ask"), json={"name": "Ada"}) as r:
            assert r.status == 200
            run_id = r.headers["X-Harkd-Run-Id"]
        async with d.http.post(d.url("/hooks/ask"), json={}) as r:  # fails: no name
            pass
        tracer.shutdown()
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans if s.attributes.get("harkd.run.id", run_id) == run_id}
    run = by_name["run ask"]
    assert run.attributes["harkd.run.id"] == run_id and run.parent is None
    assert run.attributes["http.response.status_code"] == 200
    steps = [s for s in spans if s.name.startswith("step ")
             and s.context.trace_id == run.context.trace_id]
    assert sorted(s.attributes["harkd.step.path"] for s in steps) == [
        "0", "1", "1.map[0].0", "1.map[1].0", "2"]
    parents = {s.attributes["harkd.step.path"]: s.parent.span_id for s in steps}
    span_of = {s.attributes["harkd.step.path"]: s.context.span_id for s in steps}
    assert parents["1.map[0].0"] == span_of["1"] and parents["0"] == run.context.span_id
    chat = by_name["chat m1"]
    assert chat.parent.span_id == span_of["2"]
    genai = {k: v for k, v in chat.attributes.items() if k.startswith("gen_ai.")}
    assert genai == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "m1", "gen_ai.usage.input_tokens": 7,
                     "gen_ai.usage.output_tokens": 5}  # "echo: secret question about Ada"
    assert run.start_time <= chat.start_time <= chat.end_time <= run.end_time
    # no inputs, outputs or prompts unless capture_content is on
    assert not any("Ada" in str(v) for s in spans for v in s.attributes.values())
    failed = [s for s in spans if s.name == "run ask" and s is not run]
    assert failed and failed[0].status.status_code.name == "ERROR"


async def test_a_fallback_shows_as_a_failed_call_then_the_one_that_answered(
        tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from harkd.testing_upstream import Reply

    exporter = InMemorySpanExporter()
    async with ScriptedUpstream() as up:
        up.plan("m1", Reply(status=500))
        config = (f"models:\n  smart:\n    - {{model: openai/m1, api_base: '{up.v1}'}}\n"
                  f"    - {{model: ollama/m2, api_base: '{up.base}'}}\n"
                  "router: {retries: 0}\n")
        pipe = "trigger: {http: {}}\nsteps:\n  - llm: {model: smart, prompt: hi}\n"
        async with run_daemon(tmp_path, {"ask": pipe}, config=config) as d:
            tracer = Tracer(TelemetryConfig(endpoint="http://unused"), exporter=exporter)
            d.daemon.services.observers.append(tracer)
            async with d.http.post(d.url("/hooks/ask")) as r:
                assert r.status == 200
            tracer.shutdown()
    calls = sorted((s for s in exporter.get_finished_spans() if s.name.startswith("chat ")),
                   key=lambda s: s.start_time)
    assert [(s.name, s.attributes["gen_ai.provider.name"], s.status.status_code.name)
            for s in calls] == [("chat m1", "openai", "ERROR"), ("chat m2", "ollama", "UNSET")]
    assert calls[0].attributes["error.type"] == "500"
    assert "gen_ai.usage.input_tokens" not in calls[0].attributes
    assert calls[1].attributes["harkd.llm.fallbacks"] == 1
    assert calls[0].end_time <= calls[1].start_time


async def test_capture_content_puts_redacted_input_and_output_in(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    files = {"echo": "trigger: {http: {}}\nsteps: [{template: 'hi {{ input.name }}'}]\n"}
    async with run_daemon(tmp_path, files) as d:
        tracer = Tracer(TelemetryConfig(endpoint="http://unused", capture_content=True),
                        exporter=exporter)
        d.daemon.services.observers.append(tracer)
        await (await d.http.post(d.url("/hooks/echo"), json={"name": "Ada"})).release()
        tracer.shutdown()
    [run] = [s for s in exporter.get_finished_spans() if s.name == "run echo"]
    assert run.attributes["harkd.run.input"] == '{"name": "Ada"}'
    assert run.attributes["harkd.run.output"] == "hi Ada"


async def test_exports_over_otlp_http_when_configured(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.read())
        received.append((request.headers.get("X-Key"), req))
        return web.Response(body=b"", content_type="application/x-protobuf")

    files = {"echo": "trigger: {http: {}}\nsteps: [{template: hi}]\n"}
    async with serve_app({"/v1/traces": traces}) as collector:
        config = (f"telemetry:\n  endpoint: {collector}/v1/traces\n"
                  f"  service_name: kitchen\n  headers: {{X-Key: k1}}\n")
        async with run_daemon(tmp_path, files, config=config) as d:
            await (await d.http.post(d.url("/hooks/echo"))).release()
        # The daemon's shutdown exported what its batch processor held.
        await wait_until(lambda: received, timeout=10)
    key, req = received[0]
    assert key == "k1"
    resource = req.resource_spans[0].resource
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    names = [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert service == "kitchen" and "run echo" in names and "step 0 template" in names


def test_parent_path() -> None:
    known = {"1": 0, "2": 0, "2.map[3].0": 0}
    assert parent_path("2.map[3].0", known) == "2"
    assert parent_path("2.map[3].0.parallel.a.1", known) == "2.map[3].0"
    assert parent_path("1.parallel.short.0", known) == "1"
    assert parent_path("0", known) is None


def test_opentelemetry_is_not_imported_without_telemetry(tmp_path: Path) -> None:
    code = ("import sys, asyncio, pathlib\n"
            "from harkd.testing import run_daemon\n"
            "async def main():\n"
            "    async with run_daemon(pathlib.Path(sys.argv[1]), {'e': 'trigger: {http: {}}\\n"
            "steps: [{template: hi}]\\n'}) as d:\n"
            "        await (await d.http.post(d.url('/hooks/e'))).release()\n"
            "asyncio.run(main())\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
