"""harkd's :func:`dataclass`: the standard library's, with ``__repr__``, ``__eq__`` and
``__hash__`` written once here instead of generated for each class.

Python 3.11's dataclass compiles each method it generates from source as the class is
defined, about half a million instructions a method; a start defines some thirty classes
with up to six methods each, a twentieth of bare aiohttp's whole start. A class's
``__init__`` (and a frozen class's guard against assignment) is still generated; its repr,
equality and hash are these functions, with the dataclass's answers: the same repr text,
equal when of the same class with equal compared fields, a frozen class hashed by them,
a mutable one with equality unhashable. A method the class body defines is kept, as the
dataclass keeps it. It takes the options harkd uses (``frozen``, ``eq``, ``repr``,
``slots``, ``kw_only``) with the standard defaults; ``dataclasses.fields``, ``replace`` and
``asdict`` work on its classes, and mypy reads them as dataclasses
(``typing.dataclass_transform``). harkd's modules import it instead of the standard one
(ruff bans ``dataclasses.dataclass`` in ``daemon/``).
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def dataclass(cls: type[T], /) -> type[T]: ...
@overload
def dataclass(*, frozen: bool = False, eq: bool = True, repr: bool = True,
              slots: bool = False, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...
@dataclass_transform(field_specifiers=(dataclasses.field,))
def dataclass(cls: Any = None, /, *, frozen: bool = False, eq: bool = True,
              repr: bool = True, slots: bool = False, kw_only: bool = False) -> Any:
    """:func:`dataclasses.dataclass` with harkd's shared repr, equality and hash; as there,
    ``eq=False`` keeps identity's equality and hash, and ``repr=False`` an inherited repr."""
    def wrap(c: type[Any]) -> type[Any]:
        own = c.__dict__  # a body that defines __eq__ alone has __hash__ None
        own_hash = own.get("__hash__", dataclasses.MISSING)
        explicit_hash = not (own_hash is dataclasses.MISSING
                             or (own_hash is None and "__eq__" in own))
        c = dataclasses.dataclass(c,  # noqa: TID251
                                  frozen=frozen, repr=False, eq=False, slots=slots,
                                  kw_only=kw_only)
        fields = dataclasses.fields(c)
        if any(f.hash is not None for f in fields):
            raise TypeError(f"{c.__qualname__}: field(hash=...) is not supported here; "
                            "a frozen class hashes its compared fields")
        if repr and "__repr__" not in own:
            c.__repr_fields__ = tuple(f.name for f in fields if f.repr)
            c.__repr__ = _repr  # type: ignore[assignment]
        if eq:
            c.__eq_key__ = staticmethod(_key([f.name for f in fields if f.compare]))
            if "__eq__" not in own:
                c.__eq__ = _eq  # type: ignore[assignment]
            if not explicit_hash:
                c.__hash__ = _hash if frozen else None  # type: ignore[assignment]
        return c
    return wrap if cls is None else wrap(cls)


def _key(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The compared fields of an instance, as a tuple (a tuple compares each item by identity
    first, as the dataclass's comparison of tuples does)."""
    if len(names) == 1:
        get = operator.attrgetter(names[0])
        return lambda obj: (get(obj),)
    return operator.attrgetter(*names) if names else lambda obj: ()


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__repr_fields__)
    return f"{self.__class__.__qualname__}({fields})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self.__eq_key__
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__eq_key__(self))
