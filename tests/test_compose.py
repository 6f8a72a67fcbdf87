"""Pipelines composed in Python run on the same engine as YAML files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harkd import compose
from harkd.check import check
from harkd.core.pipeline import Pipeline
from harkd.errors import ConfigErrors, RunError
from harkd.runtime import Runtime
from harkd.settings import Settings


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = Runtime(Settings(pipelines=tmp_path / "p", state=tmp_path / "state"))
    yield rt  # type: ignore[misc]
    rt.close()


CHAIN = (compose.set_(n="input.n * 2")
         | compose.template("n={{ vars.n }}").as_("text")
         | compose.template("skipped").only_if("vars.n > 100")
         | compose.template("{{ {'text': vars.text, 'orig': run.input} }}"))


def test_chain_compiles_to_the_loader_pipeline(runtime: Runtime) -> None:
    pipeline = CHAIN.compile("doubler")
    assert isinstance(pipeline, Pipeline)
    assert [s.kind for s in pipeline.steps] == ["set", "template", "template", "template"]
    assert CHAIN.run({"n": 4}, runtime=runtime) == {"text": "n=8", "orig": {"n": 4}}


def test_yaml_round_trip_is_accepted_by_check(tmp_path: Path, runtime: Runtime) -> None:
    path = tmp_path / "doubler.yaml"
    path.write_text(CHAIN.on("http", path="/hooks/double").with_options(timeout="5s").to_yaml())
    assert check([path]).ok
    again = compose.load(path)
    assert again.to_data() == CHAIN.on("http", path="/hooks/double").with_options(
        timeout="5s").to_data()
    assert again.run({"n": 1}, runtime=runtime) == {"text": "n=2", "orig": {"n": 1}}


def test_errors_have_positions_in_the_dumped_yaml() -> None:
    bad = compose.template("{{ oops") | compose.step("nosuchstep", "x")
    with pytest.raises(ConfigErrors) as info:
        bad.compile()
    messages = [str(e) for e in info.value.errors]
    assert any("unknown step 'nosuchstep'" in m for m in messages), messages


def test_failed_run_raises_run_error(runtime: Runtime) -> None:
    with pytest.raises(RunError, match="has no attribute 'missing'"):
        compose.template("{{ input.missing }}").__or__(compose.log("x")).run({}, runtime=runtime)


def test_sync_run_works_inside_a_running_loop(runtime: Runtime) -> None:
    async def main() -> object:
        # A notebook cell: a blocking call while a loop is running must not deadlock.
        return (compose.template("hi {{ input }}") | compose.log("x")).run("there",
                                                                          runtime=runtime)

    assert asyncio.run(main()) == "hi there"


@pytest.mark.anyio
async def test_async_run_and_stream(runtime: Runtime) -> None:
    chain = compose.template("hi {{ input }}") | compose.log("said {{ input }}")
    assert await chain.arun("you", runtime=runtime) == "hi you"
    assert [c async for c in chain.astream("you", runtime=runtime)] == []
    await runtime.aclose()


FLOW = (compose.map_("{{ input.words }}", compose.template("{{ input | upper }}"), concurrency=2)
        | compose.parallel(joined=compose.template("{{ input | join(' ') }}"),
                           count=compose.template("{{ input | length }}"))
        | compose.switch(("input.count > 2", compose.template("long: {{ input.joined }}")),
                         default=compose.template("short: {{ input.joined }}"))
        | compose.http("http://127.0.0.1:9/never").retrying(attempts=2, delay="5ms")
        .or_else(compose.template("{{ input.input }} ({{ input.step }} failed)")))


def test_control_flow_composes_runs_and_round_trips(tmp_path: Path, runtime: Runtime) -> None:
    assert FLOW.run({"words": ["a", "b", "c"]}, runtime=runtime) == "long: A B C (http failed)"
    assert FLOW.run({"words": ["a"]}, runtime=runtime) == "short: A (http failed)"
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.to_yaml())
    assert check([path]).ok
    assert compose.load(path).to_data() == FLOW.to_data()
