"""Read a YAML document and remember where every value came from.

:func:`load` returns the plain data and a :class:`Positions` map from JSON pointers to
line and column, so that schema errors found later still point into the file. It refuses
files that are too large, binary, or not UTF-8, and YAML with duplicate keys, each with a
:class:`~harkd.errors.ConfigError` at a position.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, Position
from .records import dataclass

if TYPE_CHECKING:
    import yaml


#: the standard compiler, for expressions compiled on first use
_COMPILE = re.compile


class _OnFirstUse:
    """A regular expression compiled when first used. Each method it is asked for is
    then kept on the instance, so later calls go straight to the compiled one."""

    def __init__(self, pattern: str, flags: int) -> None:
        self._pattern, self._flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = _COMPILE(self._pattern, self._flags)
        value = getattr(self._compiled, name)
        setattr(self, name, value)
        return value


def _import_yaml() -> None:
    """PyYAML, imported on first use (a daemon restarting on unchanged files takes their
    documents from the state folder's cache and never needs it), with the regular
    expressions its modules compile at import compiled when first used instead: its
    resolver's for implicit types (a document without numbers never needs those of
    ints, floats and timestamps), its constructor's for timestamps, and its pure-Python
    reader's check for characters YAML does not allow, which the C loader harkd uses never
    runs (compiling that class of most of Unicode was 57M of 88M instructions). Only
    PyYAML's own calls are deferred: a module it imports compiles as usual. PyYAML uses
    each expression through ``match`` and ``search``, which :class:`_OnFirstUse` serves."""
    if "yaml" in sys.modules:
        return

    def compile_lazily(pattern: Any, flags: Any = 0) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if isinstance(pattern, str) and caller.partition(".")[0] == "yaml":
            return _OnFirstUse(pattern, flags)
        return _COMPILE(pattern, flags)

    re.compile = compile_lazily
    try:
        import yaml  # noqa: F401
    finally:
        re.compile = _COMPILE


@functools.cache
def _loader() -> type[yaml.SafeLoader]:
    """PyYAML's loader, the C one where PyYAML has libyaml."""
    _import_yaml()
    import yaml

    try:  # the C composer is several times faster on large folders
        return yaml.CSafeLoader  # type: ignore[return-value]
    except AttributeError:  # pragma: no cover - PyYAML built without libyaml
        return yaml.SafeLoader

MAX_FILE_BYTES = 1024 * 1024


def escape(token: str) -> str:
    """Escape one JSON pointer token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(path: tuple[str | int, ...] | list[str | int]) -> str:
    return "".join("/" + escape(str(p)) for p in path)


@dataclass
class Positions:
    """JSON pointer -> (line, column) of the value, and of the key for mapping entries."""

    file: str
    values: dict[str, tuple[int, int]] = field(default_factory=dict)
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)

    def at(self, ptr: str, *, key: bool = False) -> Position:
        """The position of ``ptr``, or of its nearest ancestor that is known."""
        table = self.keys if key and ptr in self.keys else self.values
        probe = ptr
        while True:
            if probe in table:
                line, col = table[probe]
                return Position(self.file, line, col, ptr)
            if probe in self.values:
                line, col = self.values[probe]
                return Position(self.file, line, col, ptr)
            if not probe:
                return Position(self.file, 1, 1, ptr)
            probe = probe.rsplit("/", 1)[0]


def read_text(path: str, data: bytes) -> str:
    """Decode a file's bytes, refusing what is plainly not a YAML text file."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"file is {len(data):,} bytes; pipeline files are limited to {MAX_FILE_BYTES:,}",
            Position(path),
        )
    if b"\x00" in data:
        raise ConfigError("file is binary (it contains NUL bytes), not YAML", Position(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError("file is not valid UTF-8", Position(path, line, col)) from None


def load(path: str, text: str) -> tuple[Any, Positions]:
    """Parse one YAML document; return its data and the positions of its values."""
    load_with = _loader()  # imports PyYAML
    import yaml

    positions = Positions(path)
    try:
        loader = load_with(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, positions
            walk = _Walk(positions, loader)
            data = walk.node(node, "")
            if walk.errors:
                raise walk.errors[0]
            if not walk.plain:  # a tag or merge key the walk leaves to PyYAML
                data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.context not in problem:
            problem = f"{problem} ({exc.context})"
        raise ConfigError(f"YAML syntax error: {problem}", Position(path, line, col)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", Position(path)) from None
    except RecursionError:
        raise ConfigError("YAML is nested too deeply", Position(path)) from None
    return data, positions


MAX_NODES = 200_000


class _Walk:
    """One pass over the composed nodes that records positions, finds duplicate keys,
    counts nodes (so that alias bombs stop early instead of expanding) and builds the
    data: a plain document (strings, numbers, booleans, nulls, mappings and lists, the
    tags PyYAML's implicit resolver gives) costs about a sixth of what PyYAML's
    constructor spends on it. Anything else (an explicit tag, a ``<<`` merge key, a key
    that is not a scalar) clears ``plain``, and :func:`load` has PyYAML construct the
    document as before, with its errors."""

    def __init__(self, positions: Positions, loader: yaml.SafeLoader) -> None:
        self.positions = positions
        self.errors: list[ConfigError] = []
        self.budget = MAX_NODES
        self.plain = True
        self.loader = loader
        self.scalars = loader.yaml_constructors  # tag -> SafeConstructor method
        import yaml  # (load imported it)

        self.mapping, self.sequence = yaml.MappingNode, yaml.SequenceNode

    def node(self, node: yaml.Node, ptr: str) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise ConfigError(
                f"document expands to more than {MAX_NODES:,} values (aliases?)",
                Position(self.positions.file, node.start_mark.line + 1,
                         node.start_mark.column + 1, ptr),
            )
        self.positions.values[ptr] = (node.start_mark.line + 1, node.start_mark.column + 1)
        tag = node.tag
        if isinstance(node, self.mapping):
            data: dict[Any, Any] = {}
            self.plain &= tag == _MAP
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = ptr + "/" + escape(key)
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in seen and key != "<<":
                    self.errors.append(ConfigError(
                        f"duplicate key {key!r}", Position(self.positions.file, *where, child)
                    ))
                seen.add(key)
                self.positions.keys[child] = where
                value = self.node(value_node, child)
                if self.plain:
                    data[key if key_node.tag == _STR else self._key(key_node)] = value
            return data
        if isinstance(node, self.sequence):
            self.plain &= tag == _SEQ
            return [self.node(item, f"{ptr}/{i}") for i, item in enumerate(node.value)]
        if tag == _STR:
            return node.value
        if self.plain and tag in _IMPLICIT:
            return self.scalars[tag](self.loader, node)
        self.plain = False
        return None

    def _key(self, node: yaml.Node) -> Any:
        """A key that is not a plain string: its value if it is a plain scalar (PyYAML
        makes ``1:`` an int and ``on:`` a bool), else a marker that ends the fast path."""
        if node.tag in _IMPLICIT and not isinstance(node, (self.mapping, self.sequence)):
            return self.scalars[node.tag](self.loader, node)
        self.plain = False
        return _UNUSUAL


_STR, _MAP, _SEQ = ("tag:yaml.org,2002:" + t for t in ("str", "map", "seq"))
#: the scalar tags PyYAML's resolver gives plain scalars, besides str and merge (``<<``)
_IMPLICIT = frozenset("tag:yaml.org,2002:" + t
                      for t in ("null", "bool", "int", "float", "timestamp"))
_UNUSUAL = object()
