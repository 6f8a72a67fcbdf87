"""``local: NAME`` deployments: the embedded model, an OpenAI-compatible server that
:mod:`harkd.localmodel` supervises and starts on first use."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .config import Deployment
from .errors import BackendFailed
from .openai import OpenAIBackend
from .types import ChatRequest, Completion, Delta

if TYPE_CHECKING:
    from ..contracts import Services


class LocalBackend:
    """Asks the local model for its base URL (starting it if need be), then speaks OpenAI."""

    provider = "local"

    def __init__(self, http: OpenAIBackend, services: Services | None) -> None:
        self.http = http
        self.services = services

    async def prepare(self, dep: Deployment) -> str:
        if self.services is None:
            raise BackendFailed(f"{dep.label}: the embedded model needs a daemon's services",
                                retryable=False)
        try:
            # Looked up by name: harkd.localmodel is optional and imports llama.cpp lazily.
            local_model = importlib.import_module("harkd.localmodel").LocalModel
        except (ImportError, AttributeError) as exc:
            raise BackendFailed(f"{dep.label}: the embedded model is not available "
                                f"({exc})", retryable=False) from None
        base = await local_model.shared(self.services, dep.model).ensure()
        return str(base).rstrip("/") + "/v1"

    async def complete(self, dep: Deployment, base: str, req: ChatRequest) -> Completion:
        return await self.http.complete(dep, base, req)

    def stream(self, dep: Deployment, base: str, req: ChatRequest) -> AsyncIterator[Delta]:
        return self.http.stream(dep, base, req)
