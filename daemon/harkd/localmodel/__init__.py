"""The embedded local model: llama.cpp in a supervised worker process, OpenAI-compatible.

``LocalModel.shared(services, "gemma-3-270m")`` gives the daemon's one instance of a
model; ``await model.ensure()`` starts its worker on first use and returns the base URL
of its ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health``.
Importing this package is cheap: llama.cpp is imported only inside the worker process.
"""

from __future__ import annotations

from .models import INSTALL_HINT, MODELS, ModelSpec, resolve
from .supervisor import LocalModel, Options

__all__ = ["INSTALL_HINT", "MODELS", "LocalModel", "ModelSpec", "Options", "resolve"]
