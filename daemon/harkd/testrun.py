"""``harkd test``: run the ``tests:`` of pipeline files in-process.

Each test runs its pipeline once, on ``input``, through the same engine as the daemon, but
binds no trigger and reaches no network: ``llm`` steps get the test's canned ``models:``
replies through a real router whose only backend answers from that list; ``steps:`` gives
the outputs of named steps (an ``http`` call, say) instead of running them; an ``http``
step that is not stubbed fails with a message saying so. ``--live`` uses the configured
models and lets steps reach the network. Other pipelines of the same folders are loaded
(not bound), so ``pipeline:`` steps work.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import Any

from .core.bound import Bound
from .core.concurrency import Gate
from .core.loader import discover, load_file
from .core.pipeline import Pipeline
from .core.registry import Registry
from .core.registry import default as default_registry
from .core.run import RunResult
from .errors import ConfigError
from .records import dataclass
from .services import Services
from .settings import Settings, aliases, build_settings

PROVIDER = "test"


@dataclass(frozen=True)
class Outcome:
    """How one test ended. ``message`` says why it failed."""

    file: str
    pipeline: str
    name: str
    ok: bool
    message: str = ""
    duration: float = 0.0


@dataclass
class Report:
    """Every test's outcome, plus the errors of files that did not load."""

    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors


class Replies:
    """A router backend that answers each model alias from a test's canned replies.

    Each call takes the next reply; the last one repeats. An alias with no replies fails
    without retry, naming what to add to the test.
    """

    def __init__(self, replies: Mapping[str, Any]) -> None:
        self._replies = {alias: value if isinstance(value, list) else [value]
                         for alias, value in replies.items()}
        self._taken: dict[str, int] = {}

    def take(self, alias: str) -> str:
        from .router.errors import BackendFailed

        replies = self._replies.get(alias)
        if not replies:
            raise BackendFailed(f"the test gives no reply for model {alias!r}: add "
                                f"`models: {{{alias}: \"...\"}}` to it, or run "
                                "`harkd test --live`", retryable=False, breaker=False)
        i = self._taken.get(alias, 0)
        self._taken[alias] = i + 1
        reply = replies[min(i, len(replies) - 1)]
        return reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)

    async def prepare(self, dep: Any) -> str:
        return ""

    async def complete(self, dep: Any, base: str, req: Any) -> Any:
        from .router.types import Completion

        return Completion(self.take(dep.alias), finish_reason="stop")

    async def stream(self, dep: Any, base: str, req: Any) -> AsyncIterator[Any]:
        from .router.types import Delta

        for word in re.findall(r"\s*\S+", self.take(dep.alias)):
            yield Delta(text=word)
        yield Delta(finish_reason="stop")


def canned_router(services: Services, replies: Mapping[str, Any]) -> Any:
    """A router whose every alias (configured, built-in or named by the test) answers from
    ``replies``, through the router's own code: streaming, ``json_schema`` and sessions
    work as they do in the daemon."""
    from .router import Router
    from .router.config import Deployment, Policy

    names = {*aliases(services.settings), *replies}
    deps = {a: (Deployment(alias=a, index=0, provider=PROVIDER, model=a, label="test reply",
                           tier=0),) for a in names}
    return Router(deps, Policy(retries=0), services, backends={PROVIDER: Replies(replies)})


class Library:
    """The pipelines a test may call through ``pipeline:``, compiled but not bound."""

    def __init__(self, pipelines: Mapping[str, Pipeline], services: Services) -> None:
        self._pipelines = pipelines
        self._services = services
        self._bound: dict[str, Bound] = {}

    def bound(self, name: str) -> Bound | None:
        hit = self._bound.get(name)
        if hit is None and name in self._pipelines:
            pipeline = self._pipelines[name]
            hit = self._bound[name] = Bound(pipeline, Gate(pipeline.concurrency),
                                            self._services)
        return hit


def files_of(paths: Iterable[str | Path]) -> list[Path]:
    """Pipeline files named by ``paths`` (folders give every file directly in them)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(discover(p) if p.is_dir() else [p])
    return out


async def run_tests(paths: Sequence[str | Path], settings: Settings, *, live: bool = False,
                    registry: Registry | None = None, only: str | None = None) -> Report:
    """Run the tests of every pipeline file in ``paths``; ``only`` keeps tests whose name
    contains it."""
    registry = registry or default_registry()
    report = Report()
    files = files_of(paths)
    build = build_settings(settings)
    loaded = {path.resolve(): load_file(path, registry=registry, settings=build)
              for folder in sorted({f.parent for f in files}) for path in discover(folder)}
    library = {x.name: x.pipeline for x in loaded.values() if x.pipeline is not None}
    targets: list[Pipeline] = []
    for path in files:
        one = loaded.get(path.resolve()) or load_file(path, registry=registry, settings=build)
        if one.pipeline is None:
            report.errors.extend(one.errors)
            continue
        library[one.name] = one.pipeline
        targets.append(one.pipeline)
    with tempfile.TemporaryDirectory(prefix="harkd-test-") as state:
        # Sessions and caches of a test run live and die with it, unless it is live.
        run_settings = settings if live else replace(settings, state=Path(state))
        for pipeline in targets:
            for test in pipeline.tests:
                if only is None or only in str(test["name"]):
                    report.outcomes.append(await run_one(pipeline, test, library,
                                                         run_settings, registry, live))
    return report


async def run_one(pipeline: Pipeline, test: Mapping[str, Any], library: Mapping[str, Pipeline],
                  settings: Settings, registry: Registry, live: bool) -> Outcome:
    """Run one test of ``pipeline``; never raises for what the pipeline does."""
    services = Services(settings, registry)
    services.offline = not live
    if not live:
        services._router = canned_router(services, test.get("models") or {})
    pipelines = Library(library, services)
    # The pipeline step needs only bound(NAME); a test binds no trigger, so no Catalog.
    services.catalog = pipelines  # type: ignore[assignment]
    bound = pipelines.bound(pipeline.name)
    assert bound is not None
    trigger = {"kind": pipeline.trigger.kind, "test": test["name"], **(test.get("trigger") or {})}
    run = bound.new_run(test.get("input"), trigger)
    run.stubs = dict(test.get("steps") or {})
    t0 = time.perf_counter()
    try:
        result = await bound.run(run)
    finally:
        await services.aclose()
    failure = judge(result, test["expect"], run.vars)
    return Outcome(pipeline.file, pipeline.name, str(test["name"]), failure is None,
                   failure or "", time.perf_counter() - t0)


def judge(result: RunResult, expect: Mapping[str, Any],
          variables: Mapping[str, Any] | None = None) -> str | None:
    """Why ``result`` does not meet ``expect``, or None when it does."""
    if "error" in expect:
        if result.ok:
            return f"expected the run to fail with {expect['error']!r}, but it gave " \
                   f"{_show(result.output)}"
        if str(expect["error"]) not in (result.error or ""):
            return f"expected an error containing {expect['error']!r}, got {result.error!r}"
        return None
    if not result.ok:
        return f"the run failed: {result.error}"
    output = _plain(result.output)
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    if "output" in expect and output != _plain(expect["output"]):
        return f"expected output {_show(expect['output'])}, got {_show(output)}"
    if "contains" in expect:
        want = expect["contains"]
        found = want in output if isinstance(output, list) else str(want) in text
        if not found:
            return f"expected the output to contain {_show(want)}, got {_show(output)}"
    if "matches" in expect and re.search(str(expect["matches"]), text) is None:
        return f"expected the output to match /{expect['matches']}/, got {_show(output)}"
    for name, want in (expect.get("vars") or {}).items():
        got = _plain((variables or {}).get(name))
        if got != _plain(want):
            return f"expected vars.{name} to be {_show(want)}, got {_show(got)}"
    return None


def _plain(value: Any) -> Any:
    """JSON-shaped: tuples become lists, so an output compares with what YAML holds."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:200] + "…"


def junit(report: Report, total_seconds: float) -> str:
    """The report as JUnit XML (one suite per pipeline file)."""
    root = ET.Element("testsuites", tests=str(len(report.outcomes) + len(report.errors)),
                      failures=str(report.failed + len(report.errors)),
                      time=f"{total_seconds:.3f}")
    suites: dict[str, ET.Element] = {}

    def suite(file: str) -> ET.Element:
        if file not in suites:
            suites[file] = ET.SubElement(root, "testsuite", name=file, tests="0", failures="0")
        return suites[file]

    def count(s: ET.Element, failed: bool) -> None:
        s.set("tests", str(int(s.get("tests", "0")) + 1))
        if failed:
            s.set("failures", str(int(s.get("failures", "0")) + 1))

    for o in report.outcomes:
        s = suite(o.file)
        case = ET.SubElement(s, "testcase", classname=o.pipeline, name=o.name,
                             time=f"{o.duration:.3f}")
        if not o.ok:
            ET.SubElement(case, "failure", message=o.message).text = o.message
        count(s, not o.ok)
    for err in report.errors:
        s = suite(err.position.file)
        case = ET.SubElement(s, "testcase", classname=Path(err.position.file).stem,
                             name="loads")
        ET.SubElement(case, "failure", message=str(err)).text = str(err)
        count(s, True)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
