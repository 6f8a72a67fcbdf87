"""Pipelines composed in Python: the steps YAML names, as objects that chain with ``|``.

``template("Summarise: {{ input }}") | llm(model="default")`` is a :class:`Chain`. It
compiles through the same loader as a file (schema validation, templates, the step
builders), into the same :class:`~harkd.core.pipeline.Pipeline`, and runs on the same engine:
there is no second implementation. ``chain.to_yaml()`` writes a file ``harkd check``
accepts; :func:`load` reads a file back into a Chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .core.registry import Registry
from .errors import ConfigErrors
from .records import dataclass

if TYPE_CHECKING:
    from .core.pipeline import Pipeline
    from .core.run import Event, RunResult
    from .runtime import Runtime

MODELINE = "# yaml-language-server: $schema=../schemas/pipeline.schema.json\n"


@dataclass(frozen=True)
class Step:
    """One step written in code: the kind and parameters a YAML step item holds."""

    kind: str
    params: Any = None
    name: str | None = None
    when: str | None = None
    retry: Mapping[str, Any] | None = None
    #: ``"continue"``, or the step items that handle a failure (YAML's ``on_error:``)
    on_error: str | tuple[dict[str, Any], ...] | None = None

    def as_(self, name: str) -> Step:
        """Store this step's output in ``vars.NAME`` (YAML's ``as:``)."""
        return replace(self, name=name)

    def only_if(self, expression: str) -> Step:
        """Skip this step unless the expression is true (YAML's ``when:``)."""
        return replace(self, when=expression)

    def retrying(self, attempts: int = 3, delay: str | float = "200ms",
                 backoff: float = 2) -> Step:
        """Run the step again when it fails (YAML's ``retry:``)."""
        return replace(self, retry={"attempts": attempts, "delay": delay, "backoff": backoff})

    def or_else(self, handler: Step | Chain | str) -> Step:
        """When the step fails: ``"continue"``, or steps that handle the failure (YAML's
        ``on_error:``; their input is ``{error, step, input}``)."""
        return replace(self, on_error=handler if isinstance(handler, str)
                       else tuple(_items(handler)))

    def item(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.params if self.params is not None else {}}
        if self.name:
            out["as"] = self.name
        if self.when:
            out["when"] = self.when
        if self.retry:
            out["retry"] = dict(self.retry)
        if self.on_error:
            out["on_error"] = self.on_error if isinstance(self.on_error, str) \
                else list(self.on_error)
        return out

    def __or__(self, other: Step | Chain) -> Chain:
        return Chain((self,)) | other


@dataclass(frozen=True)
class Chain:
    """Steps in order, with a trigger (a webhook unless :meth:`on` says otherwise)."""

    steps: tuple[Step, ...]
    trigger: Mapping[str, Any] = field(default_factory=lambda: {"http": {}})
    options: Mapping[str, Any] = field(default_factory=dict)

    def __or__(self, other: Step | Chain) -> Chain:
        more = (other,) if isinstance(other, Step) else other.steps
        return replace(self, steps=self.steps + more)

    def on(self, kind: str, **params: Any) -> Chain:
        """Bind to a trigger when served: ``.on("cron", schedule="*/5 * * * *")``."""
        return replace(self, trigger={kind: params})

    def with_options(self, **options: Any) -> Chain:
        """Top-level keys: ``description``, ``timeout``, ``concurrency``, ``allow_cloud``."""
        return replace(self, options={**self.options, **options})

    def to_data(self) -> dict[str, Any]:
        return {**self.options, "trigger": dict(self.trigger),
                "steps": [s.item() for s in self.steps]}

    def to_yaml(self) -> str:
        """The pipeline as a YAML file (with the schema modeline)."""
        return MODELINE + yaml.safe_dump(self.to_data(), sort_keys=False, allow_unicode=True)

    def compile(self, name: str = "inline", registry: Registry | None = None) -> Pipeline:
        """Compile through the file loader; raises ConfigErrors with positions in the
        YAML this chain dumps to."""
        from .core.loader import load_bytes

        loaded = load_bytes(f"{name}.yaml", self.to_yaml().encode(), registry=registry)
        if loaded.pipeline is None:
            raise ConfigErrors(list(loaded.errors))
        return loaded.pipeline

    async def arun(self, data: Any = None, *, runtime: Runtime | None = None) -> Any:
        """Run once; return the output or raise :class:`~harkd.errors.RunError`."""
        from .runtime import default_runtime

        result = await (runtime or default_runtime()).run_pipeline(self.compile(), data)
        return _output(result)

    def run(self, data: Any = None, *, runtime: Runtime | None = None) -> Any:
        """Run once, blocking (works inside and outside a running event loop)."""
        from .runtime import default_runtime

        rt = runtime or default_runtime()
        return rt.call(self.arun(data, runtime=rt))

    async def astream(self, data: Any = None, *, runtime: Runtime | None = None
                      ) -> AsyncIterator[str]:
        """Run once, yielding text chunks as streaming steps produce them."""
        from .runtime import default_runtime

        chunks: asyncio.Queue[str | None] = asyncio.Queue()

        async def emit(event: Event) -> None:
            if event.get("type") == "delta":
                await chunks.put(str(event["text"]))

        pipeline = self.compile()
        task = asyncio.ensure_future(
            (runtime or default_runtime()).run_pipeline(pipeline, data, emit))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        while (chunk := await chunks.get()) is not None:
            yield chunk
        _output(await task)

    def stream(self, data: Any = None, *, runtime: Runtime | None = None) -> Iterator[str]:
        """Blocking twin of :meth:`astream`."""
        from .runtime import default_runtime

        rt = runtime or default_runtime()
        return rt.iterate(self.astream(data, runtime=rt))


def _output(result: RunResult) -> Any:
    from .errors import RunError

    if not result.ok:
        raise RunError(result.error or "run failed", status=result.http_status)
    return result.output


def load(source: str | Path) -> Chain:
    """A pipeline file (a path, or YAML text) as a Chain; validated like ``harkd check``."""
    from .core.loader import load_bytes

    is_path = isinstance(source, Path) or "\n" not in str(source)
    text = Path(source).read_text() if is_path else str(source)
    loaded = load_bytes(str(source) if is_path else "inline.yaml", text.encode())
    if loaded.pipeline is None:
        raise ConfigErrors(list(loaded.errors))
    data = yaml.safe_load(text)
    from .core.pipeline import STEP_META

    steps = []
    for item in data["steps"]:
        (kind,) = [k for k in item if k not in STEP_META]
        on_error = item.get("on_error")
        steps.append(Step(kind, item[kind], item.get("as"), item.get("when"), item.get("retry"),
                          on_error if on_error is None or isinstance(on_error, str)
                          else tuple(on_error)))
    options = {k: v for k, v in data.items() if k not in ("trigger", "steps")}
    return Chain(tuple(steps), data["trigger"], options)


def step(kind: str, params: Any = None, /, **kwargs: Any) -> Step:
    """Any registered step, plugins' included: ``step("template", "hi")``."""
    if kwargs:
        params = {**(params or {}), **kwargs}
    return Step(kind, params)


def template(text: str) -> Step:
    return Step("template", text)


def set_(**values: Any) -> Step:
    return Step("set", values)


def log(message: str, level: str | None = None) -> Step:
    return Step("log", message if level is None else {"message": message, "level": level})


def http(url: str, **params: Any) -> Step:
    return Step("http", {"url": url, **params} if params else url)


def pipeline(name: str, input: Any = None) -> Step:
    return Step("pipeline", name if input is None else {"name": name, "input": input})


def llm(prompt: str | None = None, **params: Any) -> Step:
    if prompt is not None:
        params["prompt"] = prompt
    return Step("llm", params)


def stt(**params: Any) -> Step:
    return Step("stt", params)


def tts(**params: Any) -> Step:
    return Step("tts", params)


def play(**params: Any) -> Step:
    return Step("play", params)


def _items(steps: Step | Chain) -> list[dict[str, Any]]:
    return [s.item() for s in (steps.steps if isinstance(steps, Chain) else (steps,))]


def map_(over: Any, steps: Step | Chain, concurrency: int | None = None) -> Step:
    """Run ``steps`` once per item of ``over``; the output is the list of results."""
    params: dict[str, Any] = {"over": over, "steps": _items(steps)}
    if concurrency is not None:
        params["concurrency"] = concurrency
    return Step("map", params)


def parallel(**branches: Step | Chain) -> Step:
    """Run each named branch at once on the same input; the output maps names to outputs."""
    return Step("parallel", {name: _items(b) for name, b in branches.items()})


def switch(*cases: tuple[str, Step | Chain], default: Step | Chain | None = None) -> Step:
    """Run the steps of the first ``(when, steps)`` case that is true, else ``default``."""
    items: list[dict[str, Any]] = [{"when": when, "steps": _items(s)} for when, s in cases]
    if default is not None:
        items.append({"steps": _items(default)})
    return Step("switch", items)
