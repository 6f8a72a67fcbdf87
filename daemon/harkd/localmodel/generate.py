"""llama.cpp generation on one thread, one request at a time, as an async stream of text.

Runs inside the worker process only (it imports ``llama_cpp``). :class:`Generator` owns
the loaded model and a single generation thread; requests queue on a FIFO lock.
Generation checks a cancel flag between tokens, so a client that goes away, or a worker
that stops, ends it within one token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import field
from typing import Any

from ..records import dataclass


class PromptTooLong(ValueError):
    """The prompt does not fit the context window. Raised by :meth:`Generator.check`."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one request (OpenAI names)."""

    max_tokens: int = 256
    temperature: float = 0.1
    top_p: float = 0.95
    seed: int = 42
    stop: tuple[str, ...] = ()
    repeat_penalty: float = 1.1


@dataclass
class Piece:
    """One streamed piece of an answer; the last one carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None


@dataclass
class Job:
    """One running generation, as seen from the event loop."""

    prompt: str
    sampling: Sampling
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()


_END = object()


class Generator:
    """A loaded ``llama_cpp.Llama`` and the one thread that generates with it."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int = 2,
                 seed: int = 42, max_queue: int = 64) -> None:
        import llama_cpp

        self.n_ctx = n_ctx
        self.max_queue = max_queue
        self._llm: Any = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx,
                                         n_threads=n_threads, n_threads_batch=n_threads,
                                         logits_all=False, seed=seed, verbose=False)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock = asyncio.Lock()
        self.waiting = 0
        self.current: Job | None = None
        #: generations finished, and of those, how many a cancel cut short
        self.finished = 0
        self.cancelled = 0
        self.stopping = threading.Event()

    def count(self, text: str, *, bos: bool) -> int:
        """The number of tokens of ``text``."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True))

    def check(self, prompt: str, max_tokens: int) -> int:
        """The prompt's token count; :class:`PromptTooLong` unless it and the answer fit."""
        tokens = self.count(prompt, bos=True)
        if tokens + max_tokens > self.n_ctx:
            raise PromptTooLong(f"the prompt has {tokens} tokens and max_tokens is "
                                f"{max_tokens}, more than the context of {self.n_ctx}")
        return tokens

    @property
    def busy_for(self) -> float:
        """Seconds the current generation has been running (0 when idle)."""
        job = self.current
        return 0.0 if job is None else time.monotonic() - job.started

    async def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        """Queue ``job``, then yield its pieces. Closing the iterator cancels the job."""
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            if job.cancelled.is_set():
                return
            self.current = job
            job.started = time.monotonic()
            async for piece in self._run(job):
                yield piece
        finally:
            job.cancel()
            self.current = None
            self._lock.release()

    async def _run(self, job: Job) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for piece in self._pieces(job):
                    emit(piece)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop, re-raised there
                emit(exc)
            finally:
                emit(_END)

        done = loop.run_in_executor(self._pool, work)
        text: list[str] = []
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                text.append(item.text)
                yield item
        finally:
            job.cancel()
            # The thread stops at its next token; wait so the model is free for the next job.
            await asyncio.shield(done)
        job.completion_tokens = self.count("".join(text), bos=False) if text else 0

    def _pieces(self, job: Job) -> Iterator[Piece]:
        s = job.sampling
        chunks = self._llm.create_completion(
            job.prompt, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
            seed=s.seed, stop=list(s.stop) or None, repeat_penalty=s.repeat_penalty,
            stream=True)
        finish: str | None = None
        try:
            for chunk in chunks:
                if job.cancelled.is_set() or self.stopping.is_set():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                if choice.get("text"):
                    yield Piece(choice["text"])
        finally:
            chunks.close()
            self.finished += 1
            self.cancelled += finish == "cancelled"
        yield Piece("", finish or "stop")

    def close(self) -> None:
        """Stop any generation and release the thread (the model goes with the process)."""
        self.stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

