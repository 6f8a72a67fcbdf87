"""Prometheus metrics of one daemon, served at ``GET /metrics``.

Each daemon has its own ``CollectorRegistry`` (two daemons in one test process do not mix).
:class:`Metrics` is a run observer (runs, run and step durations), a catalog listener
(pipeline loads, invalid and removed files) and the sink of the router's per-call
observations (:meth:`Metrics.observe_llm_call`). Gauges that describe the present (states,
in-flight runs, queue depths, open WebSocket connections) are read when scraped, so they
cannot drift.

Label values are pipeline names, step kinds, deployments and outcomes: never inputs,
outputs or secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .catalog import Catalog, Entry
    from .contracts import Services
    from .core.run import Run, RunResult
    from .router.types import Attempt

SHARED_KEY = "metrics"
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
VOICE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1, 1.2, 1.5, 2, 3, 5, 10)
#: steps whose run-log records hold voice timings
VOICE_KINDS = frozenset({"stt", "llm", "tts", "play"})


class Metrics:
    """The metrics of one daemon; a :class:`~harkd.contracts.RunObserver`."""

    def __init__(self, services: Services, catalog: Catalog | None = None) -> None:
        self.services = services
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("harkd_runs", "Runs that ended, by pipeline, trigger and status.",
                            ["pipeline", "trigger", "status"], registry=r)
        self.run_duration = Histogram("harkd_run_duration_seconds", "Run durations.",
                                      ["pipeline"], buckets=RUN_BUCKETS, registry=r)
        self.step_duration = Histogram("harkd_step_duration_seconds",
                                       "Step durations (skipped steps are not counted).",
                                       ["pipeline", "kind"], buckets=RUN_BUCKETS, registry=r)
        self.voice = Histogram("harkd_voice_stage_seconds",
                               "Stages of a voice turn: endpointing (end of speech to the "
                               "end decision), stt, llm_first_token, first_audio (the "
                               "reply step's start to its first audio) and voice_to_voice "
                               "(end of speech to the first reply audio).",
                               ["pipeline", "stage"], buckets=VOICE_BUCKETS, registry=r)
        self.loads = Counter("harkd_pipeline_loads",
                             "Pipeline file changes applied: loaded, stale (an invalid "
                             "edit kept the old version), rejected, removed.",
                             ["result"], registry=r)
        self.llm_calls = Counter("harkd_llm_calls", "LLM call attempts by deployment and "
                                 "outcome.", ["alias", "deployment", "outcome"], registry=r)
        self.llm_latency = Histogram("harkd_llm_call_duration_seconds",
                                     "Duration of LLM call attempts.", ["deployment"],
                                     buckets=RUN_BUCKETS, registry=r)
        self.llm_ttft = Histogram("harkd_llm_time_to_first_token_seconds",
                                  "Time to the first streamed token.", ["deployment"],
                                  buckets=TTFT_BUCKETS, registry=r)
        self.llm_fallbacks = Counter("harkd_llm_fallbacks", "Times the router left a "
                                     "deployment for the next one, by reason.",
                                     ["alias", "reason"], registry=r)
        self.llm_tokens = Counter("harkd_llm_tokens", "Tokens by deployment and kind.",
                                  ["deployment", "kind"], registry=r)
        r.register(_Live(services, catalog))
        services.shared[SHARED_KEY] = self
        #: labelled children of the per-run metrics, looked up once (labels() is the
        #: largest cost of a run's metrics on the webhook hot path)
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- RunObserver -----------------------------------------------------------------

    def run_started(self, run: Run) -> None:
        return None

    def run_finished(self, run: Run, result: RunResult) -> None:
        name = run.pipeline.name
        self._child(self.runs, name, str(run.trigger.get("kind", "")), result.status).inc()
        self._child(self.run_duration, name).observe(result.duration)
        speech_end: float | None = None
        for step in run.steps:
            if step.skipped:
                continue
            self._child(self.step_duration, name, step.kind).observe(step.duration)
            if step.kind in VOICE_KINDS and step.detail:
                speech_end = self._voice(name, step.kind, step.detail, speech_end)

    def _voice(self, name: str, kind: str, detail: dict[str, Any],
               speech_end: float | None) -> float | None:
        """Observe the voice stages one step's record holds; return when the turn's
        speech ended (from the stt step's turn trace), for voice_to_voice."""
        def stage(label: str, seconds: float) -> None:
            self._child(self.voice, name, label).observe(max(0.0, seconds))

        turn = detail.get("turn")
        if kind == "stt" and isinstance(turn, dict) and "waited" in turn:
            stage("endpointing", float(turn["waited"]))
            if "ended_wall" in turn:
                speech_end = float(turn["ended_wall"]) - float(turn["waited"])
        if kind == "stt" and "stt_ms" in detail:
            stage("stt", detail["stt_ms"] / 1000)
        if kind == "llm" and speech_end is not None and "ttft_ms" in detail:
            stage("llm_first_token", detail["ttft_ms"] / 1000)
        if "first_audio_ms" in detail:
            stage("first_audio", detail["first_audio_ms"] / 1000)
            if speech_end is not None and "first_audio_at" in detail:
                stage("voice_to_voice", detail["first_audio_at"] - speech_end)
        return speech_end

    # -- catalog listener ------------------------------------------------------------

    def pipeline_changed(self, entry: Entry, what: str) -> None:
        self.loads.labels("loaded" if what == "active" else what).inc()

    # -- the router's hook -----------------------------------------------------------

    def observe_llm_call(self, call: Attempt) -> None:
        """Count one LLM call attempt. The router calls this for every attempt."""
        child = self._child
        child(self.llm_calls, call.alias, call.deployment, call.outcome).inc()
        if call.outcome == "skipped":
            return
        child(self.llm_latency, call.deployment).observe(call.latency)
        if call.ttft is not None:
            child(self.llm_ttft, call.deployment).observe(call.ttft)
        if call.fallback:
            child(self.llm_fallbacks, call.alias, call.fallback).inc()
        if call.prompt_tokens:
            child(self.llm_tokens, call.deployment, "prompt").inc(call.prompt_tokens)
        if call.completion_tokens:
            child(self.llm_tokens, call.deployment, "completion").inc(call.completion_tokens)

    # -- exposition ------------------------------------------------------------------

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        return web.Response(body=self.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def observe_llm_call(services: Services, call: Attempt) -> None:
    """Report one LLM call attempt to the daemon's metrics, if it keeps any
    (``harkd invoke`` and ``harkd ask`` do not)."""
    metrics = services.shared.get(SHARED_KEY)
    if isinstance(metrics, Metrics):
        metrics.observe_llm_call(call)


class _Live(Collector):
    """Gauges read at scrape time from the catalog and the WebSocket connections."""

    def __init__(self, services: Services, catalog: Catalog | None) -> None:
        self.services = services
        self.catalog = catalog

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        catalog = self.catalog
        states = GaugeMetricFamily("harkd_pipelines", "Pipelines by state.", labels=["state"])
        inflight = GaugeMetricFamily("harkd_runs_in_flight", "Runs executing or waiting.",
                                     labels=["pipeline"])
        depth = GaugeMetricFamily("harkd_queue_depth", "Runs waiting for a concurrency slot.",
                                  labels=["pipeline"])
        if catalog is not None:
            for state, n in catalog.counts().items():
                states.add_metric([state], n)
            for name, entry in sorted(catalog.entries.items()):
                if entry.bound is not None:
                    inflight.add_metric([name], len(entry.bound.inflight))
                if entry.gate is not None:
                    depth.add_metric([name], entry.gate.depth)
        yield states
        yield inflight
        yield depth
        conns = GaugeMetricFamily("harkd_websocket_connections", "Open WebSocket connections.",
                                  labels=["pipeline"])
        from .triggers.websocket import SHARED_KEY as WS_KEY

        tracker = self.services.shared.get(WS_KEY)
        for name, n in sorted(getattr(tracker, "counts", {}).items()):
            conns.add_metric([name], n)
        yield conns
