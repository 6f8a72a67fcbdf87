"""The committed schemas are the registry's output, and every kind is documented."""

from __future__ import annotations

import json
from pathlib import Path

from harkd.config import config_schema
from harkd.core import registry, schema

REPO = Path(__file__).resolve().parents[2]


def test_committed_schemas_match_the_registry() -> None:
    reg = registry.Registry.from_entry_points("harkd")
    for name, doc in (("pipeline", schema.pipeline_schema(reg)),
                      ("harkd", config_schema())):
        committed = (REPO / "schemas" / f"{name}.schema.json").read_text()
        assert json.loads(committed) == doc, (
            f"schemas/{name}.schema.json is stale: run `harkd schema --builtin --write schemas`")


def test_schemas_are_valid_draft_2020_12() -> None:
    import jsonschema

    for path in (REPO / "schemas").glob("*.schema.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_builtins_come_from_entry_points_and_nothing_failed() -> None:
    reg = registry.default()
    assert {"template", "set", "log", "http", "pipeline"} <= set(reg.steps)
    assert "http" in reg.triggers
    assert reg.problems == []


def test_every_step_and_trigger_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    reg = registry.default()
    for name in reg.steps:
        assert f"`{name}`" in readme and f"- {name}:" in readme, f"step {name} undocumented"
    for name in reg.triggers:
        assert f"{name}:" in readme, f"trigger {name} undocumented"
