"""A scripted streaming step for tests: ``chunks: {text, delay, repeat}`` streams the
words of ``text`` (rendered) ``repeat`` times, ``delay`` seconds apart. It stands in for
an LLM step so that WebSocket and SSE streaming can be tested without a model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harkd.core.pipeline import Build
from harkd.core.registry import StepKind
from harkd.streams import TextStream
from harkd.templates import Renderable
from harkd.testing import registered


@dataclass(frozen=True)
class ChunksStep:
    text: Renderable
    delay: float
    repeat: int

    async def __call__(self, run: Any, data: Any) -> TextStream:
        words = str(self.text.render(run.context(data))).split(" ")

        async def gen() -> AsyncIterator[str]:
            for _ in range(self.repeat):
                for i, w in enumerate(words):
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    yield w if i == len(words) - 1 else w + " "

        run.step.detail.update(deployment="scripted/chunks", tokens=len(words) * self.repeat)
        return TextStream(gen())


def _build(params: dict[str, Any], b: Build) -> ChunksStep:
    return ChunksStep(b.text("text", params["text"]), float(params.get("delay", 0)),
                      int(params.get("repeat", 1)))


CHUNKS = StepKind(
    "chunks", "Test only: stream the words of a text.",
    {"type": "object", "additionalProperties": False, "required": ["text"],
     "properties": {"text": {"type": "string"}, "delay": {"type": "number"},
                    "repeat": {"type": "integer"}}},
    _build, shorthand="text")


@pytest.fixture
def chunks_step() -> Iterator[None]:
    """Register the ``chunks`` step in the default registry for one test."""
    with registered(CHUNKS):
        yield
