"""harkd: a daemon that runs AI pipelines written as YAML, and a library for the same.

Importing this package is cheap: the daemon, the router and the voice parts load only when
they are used. The library API::

    import harkd
    harkd.ask("What is the capital of France?").text
    for chunk in harkd.stream("Tell me a story"): ...
    c = harkd.chat(system="You are terse."); c.send("Hi")
    pipe = harkd.template("Summarise: {{ input }}") | harkd.llm(model="default")
    pipe.run("...")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ask": "lib", "ask_async": "lib", "stream": "lib", "stream_async": "lib",
    "chat": "lib", "achat": "lib", "Chat": "lib",
    "Runtime": "runtime",
    "Chain": "compose", "Step": "compose", "load": "compose", "step": "compose",
    "template": "compose", "set_": "compose", "log": "compose", "http": "compose",
    "pipeline": "compose", "llm": "compose", "stt": "compose", "tts": "compose",
    "play": "compose", "map_": "compose", "parallel": "compose", "switch": "compose",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harkd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
