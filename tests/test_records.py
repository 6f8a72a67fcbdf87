"""harkd.records.dataclass against the standard library's: the same repr, equality and hash."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from harkd import records


def both(**options: Any) -> list[Any]:
    """The same class body made by each decorator."""
    made = []
    for decorate in (dataclasses.dataclass, records.dataclass):
        class Point:
            x: int
            y: tuple[int, ...] = ()
            note: str = dataclasses.field(default="", repr=False, compare=False)
        made.append(decorate(**options)(Point))
    return made


@pytest.mark.parametrize("options", [{}, {"frozen": True}, {"eq": False},
                                     {"frozen": True, "eq": False}, {"slots": True},
                                     {"kw_only": True}])
def test_same_answers_as_the_standard_dataclass(options: dict[str, Any]) -> None:
    std, ours = both(**options)
    a, b, c = ({"x": 1, "y": (2,)}, {"x": 1, "y": (2,), "note": "other"}, {"x": 3})
    assert repr(ours(**a)) == repr(std(**a)) \
        == "both.<locals>.Point(x=1, y=(2,))"
    assert (ours(**a) == ours(**b)) is (std(**a) == std(**b)) is (options.get("eq") is not False)
    assert (ours(**a) == ours(**c)) is (std(**a) == std(**c)) is False
    assert (ours(**a) == (1, (2,))) is (std(**a) == (1, (2,))) is False
    assert (ours.__hash__ is None) is (std.__hash__ is None)
    if ours.__hash__ is not None:
        std_pair, ours_pair = (std(**a), std(**b)), (ours(**a), ours(**b))
        assert (hash(ours_pair[0]) == hash(ours_pair[1])) is \
            (hash(std_pair[0]) == hash(std_pair[1]))
    if options.get("frozen"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours(**a).x = 2
    assert [f.name for f in dataclasses.fields(ours)] == ["x", "y", "note"]
    assert dataclasses.replace(ours(**a), x=5).x == 5
    assert dataclasses.asdict(ours(**a)) == dataclasses.asdict(std(**a))


def test_equality_compares_by_identity_first_as_tuples_do() -> None:
    @records.dataclass(frozen=True)
    class One:
        value: float

    nan = float("nan")
    assert One(nan) == One(nan)
    assert One(nan) != One(float("nan"))
    assert len({One(1.0), One(1.0), One(2.0)}) == 2


def test_methods_the_class_defines_are_kept() -> None:
    @records.dataclass(frozen=True)
    class Named:
        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Named) and self.name.lower() == other.name.lower()

    assert repr(Named("A")) == "<A>"
    assert Named("A") == Named("a")
    assert hash(Named("A")) == hash(Named("A"))  # a frozen class is hashed by its fields

    @records.dataclass(frozen=True, repr=False)
    class Loud(Named):
        volume: int = 0

    assert repr(Loud("B", 3)) == "<B>"  # repr=False keeps the inherited repr


def test_a_recursive_repr_stops() -> None:
    @records.dataclass
    class Node:
        children: list[Any]

    node = Node([])
    node.children.append(node)
    assert repr(node) == "test_a_recursive_repr_stops.<locals>.Node(children=[...])"


def test_a_field_s_own_hash_option_is_refused() -> None:
    with pytest.raises(TypeError, match=re.escape("field(hash=...) is not supported")):
        @records.dataclass(frozen=True)
        class Keyed:
            key: str = dataclasses.field(hash=False)
