"""Deployments and routing policy, read from ``harkd.yaml``'s ``models:`` and ``router:``.

Inert values: :func:`parse` turns the mappings into frozen :class:`Deployment` and
:class:`Policy` objects and does no I/O. With no ``default`` alias configured, the
built-in one (the embedded gemma-3-270m) is added, so a fresh install answers offline.
"""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from ..durations import seconds
from ..errors import ConfigError, Position
from ..records import dataclass
from ..secrets import REDACTOR

DEFAULT_MODELS: dict[str, list[dict[str, Any]]] = {"default": [{"local": "gemma-3-270m"}]}
#: providers that harkd's pooled client speaks itself; the rest go through LiteLLM
NATIVE = ("openai", "ollama")
DEFAULT_BASE = {"openai": "https://api.openai.com/v1", "ollama": "http://127.0.0.1:11434"}
KEY_ENV = {"openai": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class Policy:
    """Router-wide defaults (``router:``); each deployment may override the timeouts."""

    timeout: float = 30.0
    first_token_timeout: float = 15.0
    retries: int = 2
    cooldown: float = 30.0
    failures: int = 3
    queue_timeout: float = 10.0
    queue: int = 1024
    backoff: float = 0.25
    max_backoff: float = 8.0
    #: longest Retry-After the router waits for on the same deployment before moving on
    max_retry_after: float = 10.0


@dataclass(frozen=True)
class Deployment:
    """One entry of an alias's fallback chain.

    ``provider`` is ``openai``, ``ollama``, ``local`` or a LiteLLM provider; ``model`` is the
    name sent upstream (without the provider prefix for native providers). ``label`` is
    the entry as the user wrote it (``openai/gpt-4o-mini``, ``local:gemma-3-270m``).
    """

    alias: str
    index: int
    provider: str
    model: str
    label: str
    tier: int
    weight: float = 1.0
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    first_token_timeout: float = 15.0
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    cloud: bool = False

    @functools.cached_property
    def id(self) -> str:
        """Unique within a router: ``alias[index]`` (made once: every call looks it up)."""
        return f"{self.alias}[{self.index}]"

    @property
    def native(self) -> bool:
        return self.provider in (*NATIVE, "local")

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrent)


@functools.lru_cache(maxsize=256)
def is_local_url(url: str | None) -> bool:
    """Whether a base URL points at this machine or a private network."""
    if not url:
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith((".local", ".lan", ".internal", ".home.arpa")):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_link_local


def parse_policy(raw: Mapping[str, Any], where: str = "router") -> Policy:
    """``router:`` as a :class:`Policy`; raises ConfigError on a malformed value."""
    base = Policy()
    values: dict[str, Any] = {}
    for name in Policy.__dataclass_fields__:
        if name not in raw:
            continue
        default = getattr(base, name)
        try:
            values[name] = int(raw[name]) if isinstance(default, int) else seconds(raw[name])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.{name}: {exc}", Position("<settings>")) from None
    return Policy(**values)


def parse(models: Mapping[str, Any], policy: Policy) -> dict[str, tuple[Deployment, ...]]:
    """Alias -> deployments in chain order; the built-in ``default`` if none is given."""
    merged: dict[str, Any] = {**DEFAULT_MODELS, **models} if "default" not in models \
        else dict(models)
    out: dict[str, tuple[Deployment, ...]] = {}
    for alias, entries in merged.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"models.{alias}: give a list of deployments",
                              Position("<settings>"))
        deps: list[Deployment] = []
        tier = -1
        prev_weighted = False
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"models.{alias}[{i}]: a deployment is a mapping",
                                  Position("<settings>"))
            weighted = "weight" in entry and "tier" not in entry
            # Entries with a weight next to each other share one tier (load-balanced).
            if "tier" in entry:
                tier = int(entry["tier"])
            elif not (weighted and prev_weighted):
                tier += 1
            prev_weighted = weighted
            deps.append(_deployment(alias, i, entry, tier, policy))
        out[alias] = tuple(deps)
    return out


def _deployment(alias: str, index: int, entry: Mapping[str, Any], tier: int,
                policy: Policy) -> Deployment:
    where = f"models.{alias}[{index}]"
    if "local" in entry:
        provider, model, label = "local", str(entry["local"]), f"local:{entry['local']}"
    elif "model" in entry and "/" in str(entry["model"]):
        label = str(entry["model"])
        provider, _, model = label.partition("/")
    else:
        raise ConfigError(f"{where}: give local: NAME or model: PROVIDER/NAME",
                          Position("<settings>"))
    api_base = entry.get("api_base") or DEFAULT_BASE.get(provider)
    key = entry.get("api_key")
    if key:
        REDACTOR.add(str(key))
    cloud = bool(entry["cloud"]) if "cloud" in entry else (
        provider != "local" and not is_local_url(api_base))
    try:
        timeout = seconds(entry.get("timeout", policy.timeout))
        ftt = seconds(entry.get("first_token_timeout", policy.first_token_timeout))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}", Position("<settings>")) from None
    return Deployment(
        alias=alias, index=index, provider=provider, model=model if provider in NATIVE
        or provider == "local" else label, label=label, tier=tier,
        weight=float(entry.get("weight", 1.0)), api_base=str(api_base) if api_base else None,
        api_key=str(key) if key else None, timeout=timeout, first_token_timeout=ftt,
        rpm=_opt_int(entry.get("rpm")), tpm=_opt_int(entry.get("tpm")),
        max_concurrent=_opt_int(entry.get("max_concurrent")),
        params=dict(entry.get("params") or {}), cloud=cloud,
    )


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None
