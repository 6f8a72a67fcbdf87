"""The tool registry and the built-in tools: schemas from hints, and safety by default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest

from harkd.tools import ToolContext, ToolError, available, from_function, tool
from harkd.tools.builtin import host_allowed, safe_path
from harkd.tools.calc import evaluate

pytestmark = pytest.mark.anyio


def test_schema_from_hints_and_docstring() -> None:
    def forecast(city: str, days: int = 3, unit: Literal["C", "F"] = "C",
                 ctx: ToolContext | None = None) -> str:
        """Weather forecast for a city.

        Args:
            city: The city's name.
            days: How many days,
                at most 7.
        """
        return city

    t = from_function(forecast)
    assert t.name == "forecast" and t.description == "Weather forecast for a city."
    assert t.takes_context
    assert t.parameters == {
        "type": "object", "additionalProperties": False, "required": ["city"],
        "properties": {
            "city": {"type": "string", "description": "The city's name."},
            "days": {"type": "integer", "default": 3,
                     "description": "How many days, at most 7."},
            "unit": {"enum": ["C", "F"], "default": "C"}}}


async def test_decorator_registers_and_builtins_come_from_entry_points() -> None:
    @tool(name="shout_test")
    async def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    tools = available()
    assert {"time", "calculator", "http_get", "read_file", "shout_test"} <= set(tools)
    assert await tools["shout_test"].call({"text": "hi"}, ToolContext()) == "HI"
    assert "UTC" in await tools["time"].call({}, ToolContext())


@pytest.mark.parametrize(("expr", "value"), [
    ("1 + 2 * 3", 7), ("(3 + 4) * 2 / sqrt(16)", 3.5), ("2 ^ 10", 1024), ("-5 % 3", 1),
    ("max(1, 4, 2)", 4), ("round(pi, 2)", 3.14)])
def test_calculator(expr: str, value: float) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "open('/etc/passwd')", "(1).__class__",
    "9 ** 9 ** 9", "10 ** 5000", "[1, 2]", "'a' * 3", "x", "1 +", "lambda: 1"])
def test_calculator_refuses(expr: str) -> None:
    with pytest.raises(ToolError):
        evaluate(expr)


def test_read_file_stays_in_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    read = available()["read_file"]
    ctx = ToolContext(settings={"read_file": {"root": str(root)}})
    assert read.fn(path="sub/a.txt", ctx=ctx) == "hello"
    assert read.fn(path="/sub/a.txt", ctx=ctx) == "hello"
    for bad in ("../secret.txt", "sub/../../secret.txt", "link.txt"):
        with pytest.raises(ToolError, match="outside"):
            read.fn(path=bad, ctx=ctx)
    with pytest.raises(ToolError, match="off"):
        read.fn(path="sub/a.txt", ctx=ToolContext())
    assert safe_path(root, "sub") == (root / "sub").resolve()


async def test_http_get_needs_an_allowlisted_host() -> None:
    get = available()["http_get"]
    with pytest.raises(ToolError, match=r"not in tools\.http_get\.allow"):
        await get.call({"url": "http://127.0.0.1:1/"}, ToolContext())
    with pytest.raises(ToolError, match="http"):
        await get.call({"url": "file:///etc/passwd"}, ToolContext())
    assert host_allowed("api.example.com", ["*.example.com"])
    assert not host_allowed("example.com.evil.net", ["example.com", "*.example.com"])


async def test_http_get_fetches_allowed_host(tmp_path: Path) -> None:
    from harkd.core.registry import default
    from harkd.services import Services
    from harkd.settings import Settings
    from harkd.testing_upstream import ScriptedUpstream

    async with ScriptedUpstream() as up:
        services = Services(Settings(), default())
        try:
            ctx = ToolContext(services, None, {"http_get": {"allow": ["127.0.0.1"]}})
            text = await available()["http_get"].call({"url": up.v1 + "/models"}, ctx)
            assert text.startswith("HTTP 200") and '"object": "list"' in text
        finally:
            await services.aclose()
