"""The one registry of step and trigger kinds.

Built-in kinds register through the same entry-point groups that plugins use
(``harkd.steps`` and ``harkd.triggers``, see ``pyproject.toml``), so a plugin's step is
validated, documented and autocompleted exactly like a built-in one. An entry point names
a :class:`StepKind` or :class:`TriggerKind`; importing it must be cheap (heavy libraries are
imported by the builder, when a pipeline needs them).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..logs import get_logger
from ..records import dataclass
from . import entrypoints
from .entrypoints import STEP_GROUP, Entry

if TYPE_CHECKING:
    from ..contracts import Step, Trigger

log = get_logger("harkd.registry")

JSON = dict[str, Any]


@dataclass(frozen=True, eq=False)
class StepKind:
    """A kind of step: its name, the JSON Schema of its parameters, and its builder.

    ``shorthand`` names the parameter that a plain (non-mapping) value stands for, as in
    ``template: "Hello"``. ``build`` receives the normalised parameters (always a dict) and
    returns the compiled step; it raises :class:`~harkd.errors.ConfigError` through
    ``Build.error`` for problems the schema cannot see. ``build``'s second argument is a
    :class:`harkd.core.pipeline.Build` (typed ``Any`` here: the pipeline model sits on
    this registry, so it cannot be imported from it).
    """

    name: str
    summary: str
    params: JSON
    build: Callable[[dict[str, Any], Any], Step]
    shorthand: str | None = None
    examples: tuple[Any, ...] = ()

    def schema(self) -> JSON:
        params = dict(self.params)
        params.setdefault("description", self.summary)
        if self.shorthand is None:
            return params
        main = self.params.get("properties", {}).get(self.shorthand, {"type": "string"})
        return {"description": self.summary, "anyOf": [main, params]}


@dataclass(frozen=True, eq=False)
class TriggerKind:
    """A kind of trigger: its name, the JSON Schema of its parameters, and its builder."""

    name: str
    summary: str
    params: JSON
    build: Callable[[dict[str, Any], Any], Trigger]

    def schema(self) -> JSON:
        params = dict(self.params)
        params.setdefault("description", self.summary)
        if params.get("type") == "object" and not params.get("required"):
            params["type"] = ["object", "null"]
        return params


@dataclass(eq=False)
class Problem:
    """A plugin that failed to load: reported by ``harkd plugins`` and disabled alone."""

    group: str
    name: str
    value: str
    error: str


class UnknownKind(KeyError):
    """No kind of that name: none is installed, or its plugin failed to import. Raised by
    :class:`Kinds` lookups."""


K = TypeVar("K", StepKind, TriggerKind)


class Kinds(MutableMapping[str, K]):
    """One group's kinds by name. A kind found through an entry point is imported when it
    is first looked up, so a start whose pipelines use two kinds imports two modules;
    iterating (or ``len``) imports them all. A kind whose import fails is recorded as a
    problem and is then unknown, as if it were not installed."""

    def __init__(self, registry: Registry, kinds: Mapping[str, K] | None = None) -> None:
        self._registry = registry
        self._slots: dict[str, K | Entry] = dict(kinds or {})
        #: whether kinds were set or removed other than through entry points
        self.edited = kinds is not None

    def defer(self, entry: Entry) -> None:
        """Know ``entry``'s kind by name; import it on first lookup."""
        self._slots[entry.name] = entry

    def __getitem__(self, name: str) -> K:
        self._registry.scan()
        slot = self._slots.get(name)
        if slot is None:
            raise UnknownKind(name)
        if not isinstance(slot, Entry):
            return slot
        kind: K | None = self._registry._load(slot)
        if kind is None:
            if self._slots.get(name) is slot:
                del self._slots[name]
            raise UnknownKind(name)
        self._slots[name] = kind
        return kind

    def __setitem__(self, name: str, kind: K) -> None:
        self._registry.scan()
        self._slots[name] = kind
        self.edited = True

    def __delitem__(self, name: str) -> None:
        self._registry.scan()
        del self._slots[name]
        self.edited = True

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return iter(list(self._slots))

    def __len__(self) -> int:
        self.load_all()
        return len(self._slots)

    def known(self) -> set[str]:
        """The names of the kinds, imported or not (one whose import fails is dropped
        when it is first looked up)."""
        self._registry.scan()
        return set(self._slots)

    def load_all(self) -> None:
        """Import every kind not imported yet (their failures become problems)."""
        self._registry.scan()
        for name, slot in list(self._slots.items()):
            if isinstance(slot, Entry):
                with contextlib.suppress(UnknownKind):
                    self[name]


class Registry:
    """Step and trigger kinds by name, plus the entry points that failed.

    Made by :meth:`from_entry_points`, it looks the entry points up when first used (or
    :meth:`scan` reads them from a cache) and imports a kind's module only when the kind
    is looked up (see :class:`Kinds`); :attr:`problems` and iteration import them all.
    Made by hand (``Registry(steps={...})``), it holds just those kinds."""

    def __init__(self, steps: Mapping[str, StepKind] | None = None,
                 triggers: Mapping[str, TriggerKind] | None = None) -> None:
        self.steps: Kinds[StepKind] = Kinds(self, steps)
        self.triggers: Kinds[TriggerKind] = Kinds(self, triggers)
        self._problems: list[Problem] = []
        self.origins: dict[str, str] = {}
        #: the entry points this registry was made from
        self._found: list[Entry] = []
        #: with from_entry_points, until scan(): the distribution to keep ("" for all)
        self._unscanned: str | None = None

    @property
    def problems(self) -> list[Problem]:
        """The entry points that failed to load (every kind is imported to know)."""
        self.load_all()
        return self._problems

    def load_all(self) -> None:
        """Import every kind now: ``harkd check``, ``harkd plugins`` and the schema need
        them all, and report the plugins that fail."""
        self.steps.load_all()
        self.triggers.load_all()

    def add(self, kind: StepKind | TriggerKind, origin: str = "builtin") -> None:
        if isinstance(kind, StepKind):
            self.steps[kind.name] = kind
        else:
            self.triggers[kind.name] = kind
        self.origins[self.key(kind)] = origin

    @staticmethod
    def key(kind: StepKind | TriggerKind) -> str:
        return f"{'step' if isinstance(kind, StepKind) else 'trigger'}:{kind.name}"

    def describe(self) -> list[dict[str, str]]:
        """Every kind with the package (and version) it comes from."""
        kinds: list[StepKind | TriggerKind] = [*self.steps.values(), *self.triggers.values()]
        return [{"kind": self.key(k).split(":")[0], "name": k.name, "summary": k.summary,
                 "origin": self.origins.get(self.key(k), "?")} for k in kinds]

    @classmethod
    def from_entry_points(cls, only: str | None = None) -> Registry:
        """Every installed kind (each imported on first use); with ``only``, just those of
        that distribution (``harkd`` for the built-ins, as the committed schemas hold)."""
        registry = cls()
        registry._unscanned = only or ""
        return registry

    def scan(self, cache: Path | None = None) -> None:
        """Look up the installed entry points, if not done yet. With ``cache`` (a file in
        the state folder), they are read from there while no folder of ``sys.path`` has
        changed since it was written (installing or removing a package changes its
        folder), which spares importing and running :mod:`importlib.metadata`."""
        only = self._unscanned
        if only is None:
            return
        self._unscanned = None
        key = entrypoints.path_key()
        found = entrypoints.read_scan(cache, key) if cache is not None and not only else None
        if found is None:
            found = entrypoints.scan_entry_points()
            if cache is not None and not only:
                entrypoints.write_scan(cache, key, found)
        for entry in found:
            if only and entry.dist != only:
                continue
            self._found.append(entry)
            (self.steps if entry.group == STEP_GROUP else self.triggers).defer(entry)

    def _load(self, entry: Entry) -> Any:
        expected = StepKind if entry.group == STEP_GROUP else TriggerKind
        try:
            kind = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin disables only itself
            self._problem(entry, f"{type(exc).__name__}: {exc}")
            return None
        if not isinstance(kind, expected) or kind.name != entry.name:
            self._problem(entry, f"is not a {expected.__name__} named {entry.name!r}")
            return None
        self.origins[self.key(kind)] = f"{entry.dist} {entry.version}"
        return kind

    def fingerprint(self) -> str | None:
        """What tells these kinds' schemas from other ones without importing a kind: the
        entry points, their distributions' versions, and the size and time of every
        source file of their top-level packages and of harkd's (which holds the rest of
        the pipeline schema). None if kinds were set or removed by hand: then only the
        schema itself tells."""
        self.scan()
        if self.steps.edited or self.triggers.edited:
            return None
        lines = [" ".join(entry.row()) for entry in self._found]
        tops = {entry.value.split(":")[0].split(".")[0].strip() for entry in self._found}
        for top in sorted(tops | {__name__.split(".")[0]}):
            lines.append(f"{top} {entrypoints.sources(top)}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def _problem(self, entry: Entry, error: str) -> None:
        self._problems.append(Problem(entry.group, entry.name, entry.value, error))
        log.warning("plugin_failed", group=entry.group, name=entry.name, value=entry.value,
                    error=error)


_DEFAULT: Registry | None = None


def default() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry.from_entry_points()
    return _DEFAULT
