"""The quick schema check agrees with jsonschema on every document it is given: the
repository's pipelines, every kind's examples, and random edits of them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harkd import yamlfile
from harkd.core.quickcheck import compile_check, equal
from harkd.core.registry import default
from harkd.core.schema import pipeline_schema
from harkd.core.validate import validate_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = pipeline_schema(default())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
QUICK = compile_check(SCHEMA)


def seeds() -> list[Any]:
    docs: list[Any] = []
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        data, _ = yamlfile.load(str(path), path.read_text())
        docs.append(data)
    for kind in default().steps.values():
        for example in kind.examples:
            docs.append({"trigger": {"http": {}}, "steps": [{kind.name: example}]})
    return docs


SEEDS = seeds()


def agree(doc: Any) -> bool:
    assert QUICK is not None
    quick = QUICK(doc)
    assert quick == VALIDATOR.is_valid(doc), doc
    return quick


def test_the_generated_schema_compiles_and_the_seeds_are_valid() -> None:
    assert QUICK is not None and len(SEEDS) > 10
    for doc in SEEDS:
        assert agree(doc)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from([-1, 0, 1, 2, 3, 100, 65535, 65536, 10**9]),
    st.sampled_from([0.0, 0.5, 2.0, -1.0, 1e300]),
    st.sampled_from(["parallel", "queue", "single", "restart", "GET", "POST", "30s", "x",
                     "", "/hooks/x", "default", "{{ input }}", "continue", "a_b", "9z",
                     "whisper", "piper", "json", "text"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["template", "as", "when", "max", "mode", "steps", "url",
                                     "method", "http", "x", "over", "model", "retry",
                                     "attempts", "on_error", "queue", "delay", "engine"]),
                    inner, max_size=3)), max_leaves=6)


def paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*here, i))
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_edits_of_valid_documents(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(doc)))
        if not where:
            continue
        parent = doc
        for p in where[:-1]:
            parent = parent[p]
        action = data.draw(st.integers(0, 2))
        if action == 0:
            parent[where[-1]] = data.draw(VALUES)
        elif action == 1:
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["as", "when", "extra", "retry", "mcp"]))] = \
                data.draw(VALUES)
    agree(doc)


def test_json_equality_keeps_true_apart_from_one() -> None:
    assert not equal(True, 1) and not equal(0, False) and equal(1, 1.0)
    assert equal({"a": [1, True]}, {"a": [1.0, True]}) and not equal([1], [True])
    check = compile_check({"enum": [1, "a"]})
    assert check is not None and check(1.0) and not check(True)


def test_integers_include_whole_floats_but_not_booleans() -> None:
    check = compile_check({"type": "integer"})
    assert check is not None and check(2.0) and check(3) and not check(True)
    assert not check(2.5)


def test_an_unknown_keyword_leaves_the_schema_to_jsonschema() -> None:
    assert compile_check({"type": "object", "if": {"required": ["a"]}}) is None
    assert compile_check({"$ref": "https://example.com/s.json"}) is None


@pytest.mark.parametrize("text", [
    "trigger: {http: {}}\nsteps:\n  - templat: hi\n",
    "trigger: {http: {}, cron: {}}\nsteps:\n  - template: hi\n",
    "trigger: {http: {}}\nsteps:\n  - {template: hi, set: {a: b}}\n",
])
def test_a_document_the_quick_check_refuses_gets_jsonschema_errors(text: str) -> None:
    data, positions = yamlfile.load("p.yaml", text)
    assert QUICK is not None and not QUICK(data)
    errors = validate_pipeline(data, positions)
    assert errors and all(e.file == "p.yaml" and e.line >= 1 for e in errors)


GENERIC: list[Any] = [None, True, False, 0, 1, -1, 2.0, 0.5, "", "x", "A_b", "9z", "/hooks/x",
                      "x y", "30s", "GET", [], ["x"], [1, 1], ["x", "x"], [{"template": "x"}], {},
                      {"x": 1}]


def subschemas(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                for each in value.values():
                    out += subschemas(each)
            elif key not in ("enum", "const", "default", "examples"):
                out += subschemas(value)
    elif isinstance(node, list):
        for value in node:
            out += subschemas(value)
    return out


def near(sub: dict[str, Any]) -> list[Any]:
    """Values at the edges of what ``sub`` allows."""
    values = list(GENERIC)
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(sub.get(key), int | float):
            n = sub[key]
            values += [n - 1, n - 0.5, n, float(n), n + 0.5, n + 1]
    for key in ("minLength", "minItems", "minProperties", "maxProperties"):
        if isinstance(sub.get(key), int):
            n = sub[key]
            values += ["a" * n, "a" * max(n - 1, 0), ["a"] * n, {str(i): 1 for i in range(n)},
                       {str(i): 1 for i in range(n + 1)}]
    for value in sub.get("enum", []):
        values += [value, [value], {"x": value}]
    props = sub.get("properties")
    if isinstance(props, dict):
        full = {k: "x" for k in props}
        values += [full, {k: "x" for k in sub.get("required", [])},
                   {k: None for k in list(props)[:2]}]
        names = list(props)[:12]
        values += [{a: {}, b: {}} for i, a in enumerate(names) for b in names[i + 1:]]
        for k in names:
            for v in GENERIC:
                values.append({**{r: "x" for r in sub.get("required", [])}, k: v})
    if sub.get("uniqueItems"):
        options = sub.get("items", {}).get("enum", ["x"])
        values += [[options[0], options[0]], [options[0]], list(options)]
    return values


def test_each_subschema_agrees_with_jsonschema_at_its_edges() -> None:
    checked = 0
    for sub in subschemas(SCHEMA):
        if "$ref" in repr(sub):
            continue  # the whole documents above cover references
        quick = compile_check(sub)
        assert quick is not None, sub
        validator = jsonschema.Draft202012Validator(sub)
        for value in near(sub):
            assert quick(value) == validator.is_valid(value), (sub, value)
            checked += 1
    assert checked > 1000
