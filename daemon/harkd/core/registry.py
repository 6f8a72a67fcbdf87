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
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

if TYPE_CHECKING:
    from ..contracts import Step, Trigger

log = structlog.get_logger("harkd.registry")

STEP_GROUP = "harkd.steps"
TRIGGER_GROUP = "harkd.triggers"

JSON = dict[str, Any]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass
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

    def __init__(self, load: Callable[[importlib.metadata.EntryPoint], K | None],
                 kinds: Mapping[str, K] | None = None) -> None:
        self._load: Callable[[importlib.metadata.EntryPoint], K | None] = load
        self._slots: dict[str, K | importlib.metadata.EntryPoint] = dict(kinds or {})
        #: whether kinds were set or removed other than through entry points
        self.edited = kinds is not None

    def defer(self, ep: importlib.metadata.EntryPoint) -> None:
        """Know ``ep``'s kind by name; import it on first lookup."""
        self._slots[ep.name] = ep

    def __getitem__(self, name: str) -> K:
        slot = self._slots.get(name)
        if slot is None:
            raise UnknownKind(name)
        if not isinstance(slot, importlib.metadata.EntryPoint):
            return slot
        kind = self._load(slot)
        if kind is None:
            if self._slots.get(name) is slot:
                del self._slots[name]
            raise UnknownKind(name)
        self._slots[name] = kind
        return kind

    def __setitem__(self, name: str, kind: K) -> None:
        self._slots[name] = kind
        self.edited = True

    def __delitem__(self, name: str) -> None:
        del self._slots[name]
        self.edited = True

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return iter(list(self._slots))

    def __len__(self) -> int:
        self.load_all()
        return len(self._slots)

    def load_all(self) -> None:
        """Import every kind not imported yet (their failures become problems)."""
        for name, slot in list(self._slots.items()):
            if isinstance(slot, importlib.metadata.EntryPoint):
                with contextlib.suppress(UnknownKind):
                    self[name]


class Registry:
    """Step and trigger kinds by name, plus the entry points that failed.

    Built from entry points, it imports a kind's module only when the kind is looked up
    (see :class:`Kinds`); :attr:`problems` and iteration import them all. Built by hand
    (``Registry(steps={...})``), it holds just those kinds."""

    def __init__(self, steps: Mapping[str, StepKind] | None = None,
                 triggers: Mapping[str, TriggerKind] | None = None) -> None:
        self.steps: Kinds[StepKind] = Kinds(self._loader(STEP_GROUP, StepKind), steps)
        self.triggers: Kinds[TriggerKind] = Kinds(self._loader(TRIGGER_GROUP, TriggerKind),
                                                  triggers)
        self._problems: list[Problem] = []
        self.origins: dict[str, str] = {}
        #: the entry points this registry was made from, by group
        self._found: list[tuple[str, importlib.metadata.EntryPoint]] = []
        self._dists: dict[int, tuple[str, str]] = {}

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
        found = importlib.metadata.entry_points()  # one scan of the installed distributions
        for group, kinds in ((STEP_GROUP, registry.steps), (TRIGGER_GROUP, registry.triggers)):
            for ep in sorted(found.select(group=group), key=lambda e: e.name):
                if only is not None and registry._origin(ep)[0] != only:
                    continue
                registry._found.append((group, ep))
                kinds.defer(ep)
        return registry

    def _loader(self, group: str, expected: type[K]) -> Callable[
            [importlib.metadata.EntryPoint], K | None]:
        def load(ep: importlib.metadata.EntryPoint) -> K | None:
            try:
                kind = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin disables only itself
                self._problem(group, ep.name, ep.value, f"{type(exc).__name__}: {exc}")
                return None
            if not isinstance(kind, expected) or kind.name != ep.name:
                self._problem(group, ep.name, ep.value,
                              f"is not a {expected.__name__} named {ep.name!r}")
                return None
            dist, version = self._origin(ep)
            self.origins[self.key(kind)] = f"{dist} {version}"
            return kind
        return load

    def _origin(self, ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
        """The name and version of ``ep``'s distribution, from its metadata's header (the
        email parser that ``dist.metadata`` uses costs more than the rest of the scan)."""
        dist = ep.dist
        if dist is None:
            return "?", "?"
        hit = self._dists.get(id(dist))
        if hit is None:
            text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
            head = dict(_HEADER.findall(text.partition("\n\n")[0]))
            hit = self._dists[id(dist)] = (head.get("Name", "?"), head.get("Version", "?"))
        return hit

    def fingerprint(self) -> str | None:
        """What tells these kinds' schemas from other ones without importing a kind: the
        entry points, their distributions' versions, and the size and time of every
        source file of their top-level packages and of harkd's (which holds the rest of
        the pipeline schema). None if kinds were set or removed by hand: then only the
        schema itself tells."""
        if self.steps.edited or self.triggers.edited:
            return None
        lines = [f"{group} {ep.name} {ep.value} {' '.join(self._origin(ep))}"
                 for group, ep in self._found]
        tops = {ep.value.split(":")[0].split(".")[0].strip() for _, ep in self._found}
        for top in sorted(tops | {__name__.split(".")[0]}):
            lines.append(f"{top} {_sources(top)}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def _problem(self, group: str, name: str, value: str, error: str) -> None:
        self._problems.append(Problem(group, name, value, error))
        log.warning("plugin_failed", group=group, name=name, value=value, error=error)


_HEADER = re.compile(r"^(Name|Version):[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def _sources(top: str) -> str:
    """The digest of the size and time of every ``.py`` file of the top-level module or
    package ``top``, found without importing it ("?" if it cannot be found)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "?"
    roots = list(spec.submodule_search_locations or ()) or [spec.origin or ""]
    h = hashlib.sha256()
    pending = sorted(roots)
    while pending:
        path = pending.pop()
        try:
            if not os.path.isdir(path):
                st = os.stat(path)
                h.update(f"{path} {st.st_mtime_ns} {st.st_size}\n".encode())
                continue
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            h.update(f"{path} ?\n".encode())
            continue
        for e in entries:
            if e.name.endswith(".py") and e.is_file():
                st = e.stat()
                h.update(f"{e.path} {st.st_mtime_ns} {st.st_size}\n".encode())
            elif e.is_dir() and e.name != "__pycache__" and not e.name.startswith("."):
                pending.append(e.path)
    return h.hexdigest()[:16]


_DEFAULT: Registry | None = None


def default() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry.from_entry_points()
    return _DEFAULT
