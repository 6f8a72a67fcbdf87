from __future__ import annotations

import pytest

from harkd import templates
from harkd.errors import ConfigError, Position, StepError

AT = Position("t.yaml", 3, 5, "/steps/0/template/text")


def render(source: str, **ctx: object) -> object:
    return templates.text(source, AT).render(ctx)


def test_text_and_native_values() -> None:
    assert render("Hi {{ name }}!", name="Ada") == "Hi Ada!"
    assert render("{{ items }}", items=[1, 2]) == [1, 2]
    assert render("{{ n + 1 }}", n=1) == 2
    assert render("plain") == "plain"
    assert render("{{ a }} and {{ b }}", a=1, b=2) == "1 and 2"


def test_undefined_is_an_error_but_chains_into_default() -> None:
    with pytest.raises(StepError, match="has no attribute 'nope'"):
        render("{{ input.nope }}", input={})
    assert render("{{ input.a.b | default('x') }}", input={}) == "x"
    assert render("{{ 'yes' if input.flag is defined else 'no' }}", input={}) == "no"


def test_syntax_error_points_into_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        templates.text("a\n{% if %}", AT)
    assert info.value.line == 4 and info.value.pointer == AT.pointer


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ input.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ input.update({'x': 1}) }}",
    "{{ input.append(1) }}",
    "{{ range(10**9) | list }}",
])
def test_sandbox_refuses_escapes(attack: str) -> None:
    with pytest.raises(StepError):
        render(attack, input={"a": 1} if "update" in attack else [1])


def test_value_compiles_nested_structures() -> None:
    value = templates.value({"a": "{{ x }}", "b": ["k", "{{ x * 2 }}"], "c": 3},
                            lambda p: Position("t.yaml", 1, 1, p), "/json")
    assert value.render({"x": 2}) == {"a": 2, "b": ["k", 4], "c": 3}
    assert isinstance(templates.value({"a": 1}, lambda p: AT, ""), templates.Constant)
