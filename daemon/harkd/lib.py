"""harkd as a library: ask, stream and chat through the same router as the daemon.

Each function has an async twin (``ask_async``, ``stream_async``, ``achat``). The blocking
ones run on the runtime's private loop thread, so they work in scripts and inside a
running event loop (a notebook) alike. Configuration comes from ``harkd.yaml`` as for the
daemon, or from a :class:`~harkd.runtime.Runtime` passed in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import dataclass
from .runtime import Runtime, default_runtime

if TYPE_CHECKING:
    from .router import ChatRequest, ChatResponse


def _request(messages: list[Mapping[str, Any]], model: str, params: Mapping[str, Any]
             ) -> ChatRequest:
    from .router import ChatRequest

    known = {"temperature", "max_tokens", "stop", "tools", "json_schema", "allow_cloud"}
    fields = {k: v for k, v in params.items() if k in known}
    if "stop" in fields:
        fields["stop"] = tuple(fields["stop"])
    if "tools" in fields:
        fields["tools"] = tuple(fields["tools"])
    extra = {k: v for k, v in params.items() if k not in known}
    return ChatRequest(model=model, messages=tuple(messages), params=extra, **fields)


def _messages(prompt: str, system: str | None) -> list[Mapping[str, Any]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


async def ask_async(prompt: str, *, model: str = "default", system: str | None = None,
                    runtime: Runtime | None = None, **params: Any) -> ChatResponse:
    """One question; the response has ``text``, ``alias``, ``deployment``, ``usage``,
    ``latency``, ``ttft``, ``fallbacks`` and every ``attempts``."""
    router = (runtime or default_runtime()).services().router
    return await router.complete(_request(_messages(prompt, system), model, params))


def ask(prompt: str, **kwargs: Any) -> ChatResponse:
    """Blocking :func:`ask_async`."""
    rt = kwargs.pop("runtime", None) or default_runtime()
    return rt.call(ask_async(prompt, runtime=rt, **kwargs))


async def stream_async(prompt: str, *, model: str = "default", system: str | None = None,
                       runtime: Runtime | None = None, **params: Any) -> AsyncIterator[str]:
    """Text chunks of the answer as they come."""
    router = (runtime or default_runtime()).services().router
    chunks = router.stream(_request(_messages(prompt, system), model, params))
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


def stream(prompt: str, **kwargs: Any) -> Iterator[str]:
    """Blocking :func:`stream_async`: an iterator of text chunks."""
    rt: Runtime = kwargs.pop("runtime", None) or default_runtime()
    return rt.iterate(stream_async(prompt, runtime=rt, **kwargs))


@dataclass
class Chat:
    """A conversation that keeps its history; save it as JSON and load it back."""

    model: str = "default"
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    runtime: Runtime | None = field(default=None, repr=False)

    def _all(self) -> list[Mapping[str, Any]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.messages]

    async def asend(self, text: str) -> ChatResponse:
        """Say ``text``; the answer joins the history. A failed call leaves it unchanged."""
        router = (self.runtime or default_runtime()).services().router
        turn = {"role": "user", "content": text}
        response = await router.complete(_request([*self._all(), turn], self.model,
                                                  self.params))
        self.messages += [turn, {"role": "assistant", "content": response.text}]
        return response

    def send(self, text: str) -> ChatResponse:
        rt = self.runtime or default_runtime()
        return rt.call(self.asend(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"model": self.model, "system": self.system,
                                          "messages": self.messages,
                                          "params": self.params}, indent=2))

    @classmethod
    def load(cls, path: str | Path, *, runtime: Runtime | None = None) -> Chat:
        data = json.loads(Path(path).read_text())
        return cls(data.get("model", "default"), data.get("system"),
                   list(data.get("messages", [])), dict(data.get("params", {})), runtime)


def chat(model: str = "default", *, system: str | None = None,
         runtime: Runtime | None = None, **params: Any) -> Chat:
    """A new conversation (use ``send``; or ``asend`` from async code)."""
    return Chat(model, system, [], params, runtime)


def achat(model: str = "default", *, system: str | None = None,
          runtime: Runtime | None = None, **params: Any) -> Chat:
    """The same as :func:`chat`, named for async code: use ``await c.asend(...)``."""
    return chat(model, system=system, runtime=runtime, **params)
