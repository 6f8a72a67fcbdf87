"""``harkd check``: validate pipeline files and ``harkd.yaml`` without starting anything."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import field
from pathlib import Path

from . import config
from .core.loader import SUFFIXES, discover, load_file, pipeline_name
from .core.registry import Registry
from .core.registry import default as default_registry
from .errors import ConfigError, ConfigErrors, Position
from .records import dataclass

CONFIG_NAMES = ("harkd.yaml", "harkd.yml")


@dataclass
class Report:
    """The outcome of a check: every error, and how many files were read."""

    files: int = 0
    errors: list[ConfigError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += discover(p)
            out += [p / n for n in CONFIG_NAMES if (p / n).is_file()]
        else:
            out.append(p)
    return out


def check(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
    environ: Mapping[str, str] | None = None,
    loopback: bool = True,
    aliases: Iterable[str] | None = None,
) -> Report:
    """Validate each file (a folder means its pipeline files) and their routes together.

    With ``aliases`` (the config's model aliases), ``llm`` steps naming another are errors.
    """
    registry = registry or default_registry()
    registry.load_all()  # a plugin that fails to import is reported here
    report = Report()
    routes: dict[str, str] = {}
    for path in expand(paths):
        report.files += 1
        if path.name in CONFIG_NAMES:
            try:
                config.read_config(path, os.environ if environ is None else environ)
            except ConfigErrors as exc:
                report.errors += exc.errors
            continue
        if not path.exists():
            report.errors.append(ConfigError("no such file", Position(str(path))))
            continue
        if pipeline_name(path) is None:
            suffixes = " or ".join(SUFFIXES)
            report.errors.append(ConfigError(f"not a pipeline file (name must end in {suffixes})",
                                             Position(str(path))))
            continue
        loaded = load_file(path, registry=registry, environ=environ,
                           settings={"loopback": loopback, **(
                               {"aliases": sorted(aliases)} if aliases is not None else {})})
        report.errors += loaded.errors
        if loaded.pipeline is None:
            continue
        for route in loaded.pipeline.trigger.routes:
            if route in routes:
                report.errors.append(ConfigError(
                    f"route {route} is already served by {routes[route]}",
                    loaded.at("/trigger")))
            else:
                routes[route] = str(path)
    return report
