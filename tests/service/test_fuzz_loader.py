"""Fuzz the YAML loader and the validators with generated documents.

Whatever the bytes, ``load_bytes`` must return (never raise, never hang) either a compiled
pipeline or errors that each point at a real place in the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harkd import yamlfile
from harkd.config import validate_config
from harkd.core.loader import Loaded, load_bytes

pytestmark = pytest.mark.timeout(240)  # a hang fails; the budget is far above the need

#: HARKD_FUZZ_SCALE=10 for a deep run; the default keeps the suite quick on 2 cores.
SCALE = float(os.environ.get("HARKD_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    suppress_health_check=list(HealthCheck))



FILE = "fuzz.yaml"
ROOT = Path(__file__).resolve().parents[2]

# Keys a pipeline or harkd.yaml may hold, old names, and near misses.
KEYS = ["trigger", "steps", "http", "template", "text", "set", "log", "pipeline", "name",
        "input", "as", "when", "concurrency", "max", "mode", "queue", "timeout",
        "description", "allow_cloud", "auth", "hmac", "bearer", "token", "secret", "header",
        "prefix", "path", "url", "method", "json", "body", "headers", "fail", "sync",
        "server", "listen", "models", "router", "state", "pipelines", "output", "webhook",
        "templat", "<<", "", "~", "a/b"]
WORDS = st.text(alphabet="ab:{}%-_ ${}\\'\"\u00e9\n", max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.sampled_from([0.5, -1e300, float("inf"), float("nan")]),
    st.sampled_from(["parallel", "queue", "single", "restart", "GET", "POST", "/hooks/x",
                     "30s", "1.5m", "-1s", "{{ input }}", "{{ input.a | default(1) }}",
                     "{% for x in input %}{{ x }}{% endfor %}", "{{ unclosed", "{% if %}",
                     "${env:HOME}", "${env:NOPE}", "${env:NOPE:-fallback}", "${env:}"]),
    WORDS,
)
KEY = st.one_of(st.sampled_from(KEYS), WORDS)
# Two levels of nesting, drawn flat: deep random trees cost far more to generate than to
# load, and the validators treat every level alike.
LEAFY = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                  st.dictionaries(KEY, SCALARS, max_size=3))
VALUES = st.one_of(LEAFY, st.lists(LEAFY, max_size=3), st.dictionaries(KEY, LEAFY, max_size=4))
STEP = st.dictionaries(st.sampled_from(["template", "set", "log", "http", "pipeline", "as",
                                        "when", "output", "render"]), VALUES,
                       min_size=1, max_size=3)
PIPELINE = st.fixed_dictionaries(
    {"trigger": st.one_of(VALUES, st.fixed_dictionaries({"http": VALUES})),
     "steps": st.one_of(VALUES, st.lists(STEP, min_size=1, max_size=4))},
    optional={"concurrency": VALUES, "timeout": VALUES, "description": VALUES,
              "allow_cloud": VALUES, "limits": VALUES},
)
SEEDS = sorted(p.read_text() for p in (ROOT / "pipelines").glob("*.yaml")) or [
    "trigger: {http: {}}\nsteps: [{template: hi}]\n"]
# Characters that matter to YAML and Jinja, for mutating valid files.
NOISE = st.text(alphabet=list(":-{}[]'\"&*!|>#%@`,?\n\t ~\\$") + list("ax0"), min_size=1,
                max_size=4)


def check(raw: bytes) -> Loaded:
    """Load and assert the contract: a pipeline, or errors at real positions."""
    loaded = load_bytes(FILE, raw, environ={"HOME": "/home/x"})
    assert isinstance(loaded, Loaded)
    assert (loaded.pipeline is None) == bool(loaded.errors)
    # YAML also breaks lines at \r, NEL and the Unicode separators; splitlines() covers them.
    lines = len(raw.decode("utf-8", errors="replace").splitlines()) + 1
    for err in loaded.errors:
        assert err.file == FILE
        assert 1 <= err.line <= lines, err
        assert err.column >= 1, err
        assert err.message
        assert str(err).startswith(f"{FILE}:{err.line}:{err.column}: ")
    return loaded


@fuzz(1000)
@given(PIPELINE)
def test_generated_pipelines(doc: dict[str, Any]) -> None:
    raw = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    check(raw)
    # The same document as harkd.yaml: the config validator keeps the same contract.
    data, positions = yamlfile.load(FILE, raw.decode())
    for err in validate_config(data, positions):
        assert err.file == FILE and err.line >= 1 and err.column >= 1


@fuzz(700)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3),
                                                    NOISE), min_size=1, max_size=4))
def test_mutated_valid_files(seed: str, edits: list[tuple[int, int, str]]) -> None:
    text = seed
    for where, cut, noise in edits:
        at = where % (len(text) + 1)
        text = text[:at] + noise + text[at + cut:]
    check(text.encode())


@fuzz(800)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


def test_seeds_are_valid_and_errors_can_be_found() -> None:
    # The fuzzers start from files that load, and the checker sees real errors.
    for seed in SEEDS:
        assert check(seed.encode()).pipeline is not None
    bad = check(b"trigger: {http: {}}\nsteps:\n  - templat: hi\n")
    assert [(e.line, e.column) for e in bad.errors] == [(3, 5)]


def test_alias_bomb_is_a_positioned_error() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(8))
    loaded = check(bomb.encode())
    assert loaded.pipeline is None
    assert "more than" in loaded.errors[0].message
