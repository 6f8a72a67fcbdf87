"""The daemon's settings: one table feeds the defaults, the CLI, the environment, the
``harkd.yaml`` schema and the README.

:class:`Settings` is an inert value; :func:`harkd.config.load` does the I/O (it finds
``harkd.yaml``, validates it with positions and substitutes ``${env:...}``), then
:func:`from_data` applies ``HARKD_*`` variables and command-line values on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from . import durations, secrets
from .errors import ConfigError, ConfigErrors, Position
from .records import dataclass

SIZE_SCHEMA = {"type": "integer", "minimum": 1}


@dataclass(frozen=True)
class Setting:
    """One setting: its dotted key in ``harkd.yaml``, default, help and JSON Schema."""

    key: str
    default: Any
    help: str
    schema: dict[str, Any]
    flag: str | None = None
    kind: type = str

    @property
    def attr(self) -> str:
        """The attribute of :class:`Settings`: ``server.listen`` -> ``listen``."""
        return self.key.removeprefix("server.").replace(".", "_")

    @property
    def env(self) -> str:
        return "HARKD_" + self.attr.upper()


TABLE: tuple[Setting, ...] = (
    Setting("server.listen", "127.0.0.1:8420",
            "HOST:PORT of the one listener (webhooks, WebSockets, admin API, gateway).",
            {"type": "string", "pattern": r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$"},
            flag="--listen"),
    Setting("server.token", None,
            "Bearer token for /api and /v1; required when listening off loopback.",
            {"type": ["string", "null"]}),
    Setting("server.max_body", 1024 * 1024,
            "Largest request body in bytes; larger ones get 413.", SIZE_SCHEMA, kind=int),
    Setting("server.loop", "auto",
            "Event loop of harkd run: uvloop, asyncio, or auto (uvloop when installed).",
            {"enum": ["auto", "uvloop", "asyncio"]}, flag="--loop"),
    Setting("server.shutdown_timeout", "30s",
            "How long a shutdown waits for runs to finish.", durations.SCHEMA),
    Setting("pipelines", "pipelines/", "The watched folder of pipeline files.",
            {"type": "string"}, flag="--pipelines"),
    Setting("state", "~/.local/state/harkd",
            "Folder for the run log, sessions and assembled local models.",
            {"type": "string"}, flag="--state"),
    Setting("runs.keep", 10000, "Runs the run log keeps; older ones are deleted.",
            SIZE_SCHEMA, kind=int),
    Setting("runs.max_age", "720h", "Longest the run log keeps a run.", durations.SCHEMA),
    Setting("runs.max_field", 8192,
            "Largest input or output (JSON characters) the run log stores; longer ones "
            "are truncated.", SIZE_SCHEMA, kind=int),
    Setting("local.threads", 0,
            "llama.cpp threads of the embedded model; 0: one less than the cores (at least "
            "1), which stays fast when other work shares the machine.",
            {"type": "integer", "minimum": 0}, kind=int),
    Setting("local.ctx", 2048, "Context window (tokens) of the embedded model.",
            {"type": "integer", "minimum": 256}, kind=int),
    Setting("log.level", "info", "Log level.",
            {"enum": ["debug", "info", "warning", "error"]}, flag="--log-level"),
    Setting("log.format", "auto", "Log format: json, console, or auto (console on a TTY).",
            {"enum": ["auto", "json", "console"]}),
)

BY_KEY = {s.key: s for s in TABLE}


@dataclass(frozen=True, eq=False)
class Settings:
    """Resolved settings of one daemon. Inert: build it with :func:`load`."""

    listen: str = "127.0.0.1:8420"
    token: str | None = None
    max_body: int = 1024 * 1024
    loop: str = "auto"
    shutdown_timeout: float = 30.0
    pipelines: Path = Path("pipelines")
    state: Path = field(default_factory=lambda: Path("~/.local/state/harkd").expanduser())
    log_level: str = "info"
    log_format: str = "auto"
    runs_keep: int = 10000
    runs_max_age: float = 720 * 3600.0
    runs_max_field: int = 8192
    local_threads: int = 0
    local_ctx: int = 2048
    #: alias -> list of deployment mappings, as written (after ${env:} substitution)
    models: Mapping[str, Any] = field(default_factory=dict)
    router: Mapping[str, Any] = field(default_factory=dict)
    #: other top-level sections for plugins and later features (tools, sessions, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def aliases(s: Settings) -> list[str]:
    """The model aliases pipelines may name: ``models:`` and the built-in ``default``."""
    return sorted({*s.models, "default"})


def build_settings(s: Settings) -> dict[str, Any]:
    """What step and trigger builders may read while they compile a pipeline."""
    mcp = s.extra.get("mcp")
    servers = mcp.get("servers") if isinstance(mcp, Mapping) else None
    return {"listen": s.listen, "loopback": s.loopback, "max_body": s.max_body,
            "aliases": aliases(s),
            "mcp_servers": sorted(servers) if isinstance(servers, Mapping) else []}


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def from_data(
    data: Mapping[str, Any],
    path: Path | None,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str],
) -> Settings:
    """Settings from a read and validated ``harkd.yaml`` (``data``, from ``path``): command
    line (``overrides``) over ``HARKD_*`` variables over the file over defaults.

    ``overrides`` maps setting attributes (``listen``, ``pipelines``, ...) to values from
    the command line; ``None`` values are ignored. :func:`harkd.config.load` reads the file.
    """
    env = environ
    base = path.parent if path is not None else Path(".")

    values: dict[str, Any] = {}
    for s in TABLE:
        value: Any = s.default
        node: Any = data
        for part in s.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        path_from_file = node is not None
        if node is not None:
            value = node
        if env.get(s.env) is not None:
            value, path_from_file = env[s.env], False
        if overrides and overrides.get(s.attr) is not None:
            value, path_from_file = overrides[s.attr], False
        values[s.attr] = _coerce(s, value, base if path_from_file else Path("."))
    if values["token"]:
        secrets.REDACTOR.add(values["token"])
    known = {"server", "pipelines", "state", "log", "models", "router", "local", "runs"}
    return Settings(
        **values,
        models=data.get("models") or {},
        router=data.get("router") or {},
        extra={k: v for k, v in data.items() if k not in known},
        config_file=path,
    )




def _coerce(s: Setting, value: Any, base: Path) -> Any:
    where = f"{s.key} (from {s.env} or the command line)"
    try:
        if s.key in ("pipelines", "state"):
            p = Path(str(value)).expanduser()
            return p if p.is_absolute() else base / p
        if s.schema is durations.SCHEMA:
            return durations.seconds(value)
        if s.kind is int:
            return int(value)
        if s.key == "server.listen":
            split_listen(str(value))
        if "enum" in s.schema and value not in s.schema["enum"]:
            raise ValueError(f"{value!r} is not one of {', '.join(s.schema['enum'])}")
    except ValueError as exc:
        raise ConfigErrors([ConfigError(f"{where}: {exc}", Position("<settings>"))]) from None
    return value
