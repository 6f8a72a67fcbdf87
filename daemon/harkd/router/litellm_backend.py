"""Every other provider (Anthropic, Gemini, Bedrock, Azure, ...) through LiteLLM.

``import litellm`` costs seconds and over 100 MB, so it happens only when a configured
deployment needs it, in a worker thread so the event loop keeps serving meanwhile
(``bench/litellm_import.py`` measures the loop's lag during it). By default LiteLLM
fetches its model price list from GitHub at import, with retries that sleep for seconds;
harkd makes it use the copy inside the package instead (``LITELLM_LOCAL_MODEL_COST_MAP``,
unless the environment already sets it), so a daemon never phones home to start a call.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import warnings
from collections.abc import AsyncIterator
from typing import Any

from ..logs import get_logger
from ..secrets import REDACTOR
from .backends import retry_after
from .config import Deployment
from .errors import BackendFailed
from .types import ChatRequest, Completion, Delta, ToolCall, Usage

log = get_logger("harkd.router")


#: LiteLLM releases that shipped a credential stealer (LiteLLM issue #24518); harkd
#: refuses to import them, since importing is what runs the payload
COMPROMISED = frozenset({"1.82.7", "1.82.8"})


def refuse_compromised(version: str) -> None:
    """Raise ImportError if ``version`` is a known-compromised LiteLLM release."""
    if version in COMPROMISED:
        raise ImportError(f"litellm {version} is a compromised release (LiteLLM issue "
                          "#24518) and was not imported: uninstall it, rotate the API keys "
                          "of this machine, and install a pinned good version (see "
                          "docs/security.md)")


def _import() -> Any:
    try:
        refuse_compromised(importlib.metadata.version("litellm"))
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("litellm is not installed") from None
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # LiteLLM's TypedDicts make pydantic warn once each at import; nothing to act on.
    warnings.filterwarnings("ignore", message=r".* using the `ReadOnly` qualifier",
                            category=UserWarning)
    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = True
    litellm.disable_hf_tokenizer_download = True  # no download a call did not ask for
    return litellm


class LiteLLMBackend:
    """Calls ``litellm.acompletion`` with the deployment's model string and key."""

    provider = "litellm"

    def __init__(self) -> None:
        self._module: Any = None
        self._lock = asyncio.Lock()

    async def _litellm(self, dep: Deployment) -> Any:
        if self._module is None:
            async with self._lock:
                if self._module is None:
                    log.info("litellm_importing", deployment=dep.label)
                    try:
                        self._module = await asyncio.to_thread(_import)
                    except ImportError as exc:
                        why = str(exc) if "compromised" in str(exc) else \
                            "it is not installed (pip install 'harkd[cloud]')"
                        raise BackendFailed(f"{dep.label} needs LiteLLM, but {why}",
                                            retryable=False) from None
        return self._module

    async def prepare(self, dep: Deployment) -> str:
        await self._litellm(dep)
        return dep.api_base or ""

    def _kwargs(self, dep: Deployment, base: str, req: ChatRequest) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": dep.label, "messages": [dict(m) for m in req.messages]}
        if base:
            kw["api_base"] = base
        if dep.api_key:
            kw["api_key"] = dep.api_key
        if req.temperature is not None:
            kw["temperature"] = req.temperature
        if req.max_tokens is not None:
            kw["max_tokens"] = req.max_tokens
        if req.stop:
            kw["stop"] = list(req.stop)
        if req.tools:
            kw["tools"] = [dict(t) for t in req.tools]
            if req.tool_choice is not None:
                kw["tool_choice"] = req.tool_choice
        if req.json_schema is not None:
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": dict(req.json_schema)}}
        kw.update(dep.params)
        kw.update(req.params)
        kw["num_retries"] = 0  # the router retries
        return kw

    async def complete(self, dep: Deployment, base: str, req: ChatRequest) -> Completion:
        litellm = await self._litellm(dep)
        try:
            resp = await litellm.acompletion(**self._kwargs(dep, base, req))
        except Exception as exc:  # noqa: BLE001 - LiteLLM raises many unrelated types
            raise _failure(dep, exc) from None
        choice = resp.choices[0]
        msg = choice.message
        calls = tuple(ToolCall(str(c.id), str(c.function.name), str(c.function.arguments))
                      for c in (getattr(msg, "tool_calls", None) or ()))
        usage = getattr(resp, "usage", None)
        return Completion(msg.content or "", _usage(usage), choice.finish_reason, calls)

    async def stream(self, dep: Deployment, base: str, req: ChatRequest
                     ) -> AsyncIterator[Delta]:
        litellm = await self._litellm(dep)
        try:
            resp = await litellm.acompletion(stream=True, **self._kwargs(dep, base, req))
            async for chunk in resp:
                if not chunk.choices:
                    continue
                d = chunk.choices[0].delta
                calls = tuple(
                    (int(getattr(c, "index", i) or 0), str(c.id or ""),
                     str(getattr(c.function, "name", "") or ""),
                     str(getattr(c.function, "arguments", "") or ""))
                    for i, c in enumerate(getattr(d, "tool_calls", None) or ()))
                text = getattr(d, "content", None) or ""
                if text or calls:
                    yield Delta(text, calls)
                usage = _usage(getattr(chunk, "usage", None))
                if usage is not None:
                    yield Delta(usage=usage)
        except BackendFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - LiteLLM raises many unrelated types
            raise _failure(dep, exc) from None


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(int(getattr(raw, "prompt_tokens", 0) or 0),
                 int(getattr(raw, "completion_tokens", 0) or 0))


def _failure(dep: Deployment, exc: BaseException) -> BackendFailed:
    status = getattr(exc, "status_code", None)
    status = int(status) if isinstance(status, int) else None
    # LiteLLM keeps the upstream's headers here; ``exc.response`` is often a stand-in.
    headers = getattr(exc, "litellm_response_headers", None) or getattr(
        getattr(exc, "response", None), "headers", None) or {}
    what = f"answered {status}" if status is not None else "failed"
    if status in (401, 403):
        what += ": the API key was rejected"
    message = REDACTOR(f"{dep.label} {what}: {type(exc).__name__}: {exc}")[:400]
    if status in (401, 403):
        return BackendFailed(message, status=status, retryable=False)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return BackendFailed(message, status=status, retryable=False, breaker=False)
    return BackendFailed(message, status=status,
                         retry_after=retry_after(headers.get("retry-after")))

