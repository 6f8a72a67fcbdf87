"""A sample harkd plugin: two steps, registered through the ``harkd.steps`` entry points.

Install it (``pip install ./examples/harkd-sample-plugin``) and pipelines can use::

    steps:
      - reverse: {}                 # reverses its input text
      - word_count: {min_length: 3} # counts words of at least 3 letters
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harkd.registry import StepKind


@dataclass(frozen=True)
class Reverse:
    """Reverse the text of the input (or of the rendered ``text`` parameter)."""

    text: Any

    async def __call__(self, run: Any, data: Any) -> str:
        source = self.text.render(run.context(data)) if self.text is not None else data
        return str(source)[::-1]


def _reverse(params: dict[str, Any], b: Any) -> Reverse:
    return Reverse(b.text("text", params["text"]) if "text" in params else None)


REVERSE = StepKind(
    "reverse",
    "Reverse text: the input, or the rendered `text`.",
    {"type": "object", "additionalProperties": False,
     "properties": {"text": {"type": "string", "description": "A template; default: input."}}},
    _reverse,
    shorthand="text",
)


@dataclass(frozen=True)
class WordCount:
    """Count the words of the input that have at least ``min_length`` letters."""

    min_length: int

    async def __call__(self, run: Any, data: Any) -> dict[str, int]:
        words = [w for w in str(data).split() if len(w) >= self.min_length]
        return {"words": len(words)}


def _word_count(params: dict[str, Any], b: Any) -> WordCount:
    return WordCount(int(params.get("min_length", 1)))


WORD_COUNT = StepKind(
    "word_count",
    "Count words in the input text.",
    {"type": "object", "additionalProperties": False,
     "properties": {"min_length": {"type": "integer", "minimum": 1, "default": 1}}},
    _word_count,
)
