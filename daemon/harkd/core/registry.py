"""The one registry of step and trigger kinds.

Built-in kinds register through the same entry-point groups that plugins use
(``harkd.steps`` and ``harkd.triggers``, see ``pyproject.toml``), so a plugin's step is
validated, documented and autocompleted exactly like a built-in one. An entry point names
a :class:`StepKind` or :class:`TriggerKind`; importing it must be cheap (heavy libraries are
imported by the builder, when a pipeline needs them).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


@dataclass
class Registry:
    """Step and trigger kinds by name, plus the entry points that failed."""

    steps: dict[str, StepKind] = field(default_factory=dict)
    triggers: dict[str, TriggerKind] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)

    def add(self, kind: StepKind | TriggerKind, origin: str = "builtin") -> None:
        table: dict[str, Any] = self.steps if isinstance(kind, StepKind) else self.triggers
        table[kind.name] = kind
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
        """Every installed kind; with ``only``, just those of that distribution (``harkd``
        for the built-ins, as the committed schemas hold)."""
        registry = cls()
        # A distribution's name and version come from parsing its METADATA (about 1 ms):
        # once per distribution, not once per entry point (20 parses were 12 ms of start).
        dists: dict[int, tuple[str, str]] = {}

        def origin(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
            if ep.dist is None:
                return "?", "?"
            hit = dists.get(id(ep.dist))
            if hit is None:
                meta = ep.dist.metadata
                hit = dists[id(ep.dist)] = (meta["Name"] or "?", meta["Version"] or "?")
            return hit

        found = importlib.metadata.entry_points()  # one scan of the installed distributions
        for group, expected in ((STEP_GROUP, StepKind), (TRIGGER_GROUP, TriggerKind)):
            for ep in sorted(found.select(group=group), key=lambda e: e.name):
                dist, version = origin(ep)
                if only is not None and dist != only:
                    continue
                try:
                    kind = ep.load()
                except Exception as exc:  # noqa: BLE001 - a broken plugin disables only itself
                    registry._problem(group, ep.name, ep.value, f"{type(exc).__name__}: {exc}")
                    continue
                if not isinstance(kind, expected) or kind.name != ep.name:
                    registry._problem(group, ep.name, ep.value,
                                      f"is not a {expected.__name__} named {ep.name!r}")
                    continue
                registry.add(kind, origin=f"{dist} {version}")
        return registry

    def _problem(self, group: str, name: str, value: str, error: str) -> None:
        self.problems.append(Problem(group, name, value, error))
        log.warning("plugin_failed", group=group, name=name, value=value, error=error)


_DEFAULT: Registry | None = None


def default() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry.from_entry_points()
    return _DEFAULT
