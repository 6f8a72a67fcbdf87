"""Prometheus metrics of one daemon, served at ``GET /metrics``.

:class:`Metrics` is a run observer (runs, run and step durations), a catalog listener
(pipeline loads, invalid and removed files) and the sink of the router's per-call
observations (:meth:`Metrics.observe_llm_call`). Counts are plain numbers in dicts keyed
by label values, updated on the event loop (a run's metrics cost about a microsecond);
they become Prometheus families only when ``/metrics`` is scraped, which is also when
``prometheus_client`` is first imported (it stays out of a daemon's start). Each daemon
has its own registry (two daemons in one test process do not mix). Gauges that describe
the present (states, in-flight runs, queue depths, open WebSocket connections) are read
when scraped, so they cannot drift.

Label values are pipeline names, step kinds, deployments and outcomes: never inputs,
outputs or secrets.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

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


class Counter:
    """A counter family: a number per tuple of label values, and when each was created."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1) -> None:
        value = self.values.get(key)
        if value is None:
            self.created[key] = time.time()
            self.values[key] = amount
        else:
            self.values[key] = value + amount

    def family(self) -> Metric:
        from prometheus_client.metrics_core import Metric

        fam = Metric(self.name, self.doc, "counter")
        for key, value in list(self.values.items()):
            labels = dict(zip(self.labels, key, strict=True))
            fam.add_sample(self.name + "_total", labels, float(value))
            fam.add_sample(self.name + "_created", labels, self.created[key])
        return fam


class Histogram:
    """A histogram family: per tuple of label values, the count in each bucket (not
    cumulative; the last is past the largest bound) and then the sum."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.bounds = tuple(float(b) for b in buckets)
        self.values: dict[tuple[str, ...], list[float]] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.values.get(key)
        if counts is None:
            self.created[key] = time.time()
            counts = self.values[key] = [0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self) -> Metric:
        from prometheus_client.metrics_core import Metric

        fam = Metric(self.name, self.doc, "histogram")
        # the bounds are small round numbers: repr() is how prometheus_client writes them
        les = [repr(b) for b in self.bounds] + ["+Inf"]
        for key, counts in list(self.values.items()):
            labels = dict(zip(self.labels, key, strict=True))
            total = 0.0
            for le, n in zip(les, counts, strict=False):
                total += n
                fam.add_sample(self.name + "_bucket", {**labels, "le": le}, total)
            fam.add_sample(self.name + "_count", labels, total)
            fam.add_sample(self.name + "_sum", labels, float(counts[-1]))
            fam.add_sample(self.name + "_created", labels, self.created[key])
        return fam


class Metrics:
    """The metrics of one daemon; a :class:`~harkd.contracts.RunObserver`. Updated on the
    event loop only."""

    def __init__(self, services: Services, catalog: Catalog | None = None) -> None:
        self.services = services
        self.catalog = catalog
        self.runs = Counter("harkd_runs", "Runs that ended, by pipeline, trigger and status.",
                            ("pipeline", "trigger", "status"))
        self.run_duration = Histogram("harkd_run_duration_seconds", "Run durations.",
                                      ("pipeline",), RUN_BUCKETS)
        self.step_duration = Histogram("harkd_step_duration_seconds",
                                       "Step durations (skipped steps are not counted).",
                                       ("pipeline", "kind"), RUN_BUCKETS)
        self.voice = Histogram("harkd_voice_stage_seconds",
                               "Stages of a voice turn: endpointing (end of speech to the "
                               "end decision), stt, llm_first_token, first_audio (the "
                               "reply step's start to its first audio) and voice_to_voice "
                               "(end of speech to the first reply audio).",
                               ("pipeline", "stage"), VOICE_BUCKETS)
        self.loads = Counter("harkd_pipeline_loads",
                             "Pipeline file changes applied: loaded, stale (an invalid "
                             "edit kept the old version), rejected, removed.", ("result",))
        self.llm_calls = Counter("harkd_llm_calls", "LLM call attempts by deployment and "
                                 "outcome.", ("alias", "deployment", "outcome"))
        self.llm_latency = Histogram("harkd_llm_call_duration_seconds",
                                     "Duration of LLM call attempts.", ("deployment",),
                                     RUN_BUCKETS)
        self.llm_ttft = Histogram("harkd_llm_time_to_first_token_seconds",
                                  "Time to the first streamed token.", ("deployment",),
                                  TTFT_BUCKETS)
        self.llm_fallbacks = Counter("harkd_llm_fallbacks", "Times the router left a "
                                     "deployment for the next one, by reason.",
                                     ("alias", "reason"))
        self.llm_tokens = Counter("harkd_llm_tokens", "Tokens by deployment and kind.",
                                  ("deployment", "kind"))
        #: in the order they are scraped
        self.families: tuple[Counter | Histogram, ...] = (
            self.runs, self.run_duration, self.step_duration, self.voice, self.loads,
            self.llm_calls, self.llm_latency, self.llm_ttft, self.llm_fallbacks,
            self.llm_tokens)
        self._registry: CollectorRegistry | None = None
        services.shared[SHARED_KEY] = self

    @property
    def registry(self) -> CollectorRegistry:
        """The ``prometheus_client`` registry ``/metrics`` renders (made on first use):
        these families, the live gauges, and whatever else registers (a cluster's)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
            self._registry.register(_Families(self))
            self._registry.register(_Live(self.services, self.catalog))
        return self._registry

    # -- RunObserver -----------------------------------------------------------------

    def run_started(self, run: Run) -> None:
        return None

    def run_finished(self, run: Run, result: RunResult) -> None:
        name = run.pipeline.name
        self.runs.inc((name, str(run.trigger.get("kind", "")), result.status))
        self.run_duration.observe((name,), result.duration)
        speech_end: float | None = None
        observe = self.step_duration.observe
        for step in run.steps:
            if step.skipped:
                continue
            observe((name, step.kind), step.duration)
            if step.kind in VOICE_KINDS and step.detail:
                speech_end = self._voice(name, step.kind, step.detail, speech_end)

    def _voice(self, name: str, kind: str, detail: dict[str, Any],
               speech_end: float | None) -> float | None:
        """Observe the voice stages one step's record holds; return when the turn's
        speech ended (from the stt step's turn trace), for voice_to_voice."""
        def stage(label: str, seconds: float) -> None:
            self.voice.observe((name, label), max(0.0, seconds))

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
        self.loads.inc(("loaded" if what == "active" else what,))

    # -- the router's hook -----------------------------------------------------------

    def observe_llm_call(self, call: Attempt) -> None:
        """Count one LLM call attempt. The router calls this for every attempt."""
        self.llm_calls.inc((call.alias, call.deployment, call.outcome))
        if call.outcome == "skipped":
            return
        deployment = (call.deployment,)
        self.llm_latency.observe(deployment, call.latency)
        if call.ttft is not None:
            self.llm_ttft.observe(deployment, call.ttft)
        if call.fallback:
            self.llm_fallbacks.inc((call.alias, call.fallback))
        if call.prompt_tokens:
            self.llm_tokens.inc((call.deployment, "prompt"), call.prompt_tokens)
        if call.completion_tokens:
            self.llm_tokens.inc((call.deployment, "completion"), call.completion_tokens)

    # -- exposition ------------------------------------------------------------------

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=self.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def observe_llm_call(services: Services, call: Attempt) -> None:
    """Report one LLM call attempt to the daemon's metrics, if it keeps any
    (``harkd invoke`` and ``harkd ask`` do not)."""
    metrics = services.shared.get(SHARED_KEY)
    if isinstance(metrics, Metrics):
        metrics.observe_llm_call(call)


class _Families:
    """The counters and histograms, as Prometheus families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.families:
            yield family.family()


class _Live:
    """Gauges read at scrape time from the catalog and the WebSocket connections."""

    def __init__(self, services: Services, catalog: Catalog | None) -> None:
        self.services = services
        self.catalog = catalog

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

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
