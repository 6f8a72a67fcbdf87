"""Text that a step streams, chunk by chunk, to whoever reads it.

A step returns a :class:`TextStream` to pass chunks on as they come. The engine taps it so
each chunk also reaches the run's client (a WebSocket ``delta``, an SSE event) while the
next step (``tts``, say) consumes it. A stream is read once; :meth:`TextStream.text` reads
what is left and returns the whole text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

Tap = Callable[[str], Awaitable[None]]


class TextStream:
    """An async iterator of text chunks that remembers what it has yielded."""

    def __init__(self, chunks: AsyncIterator[str]) -> None:
        self._chunks = chunks
        self._seen: list[str] = []
        self._taps: list[Tap] = []
        self._done = False
        #: whether the engine already passes its chunks to the run's client
        self.to_client = False

    def tap(self, fn: Tap) -> TextStream:
        """Call ``fn`` with each chunk as it is read."""
        self._taps.append(fn)
        return self

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._done:
            return
        try:
            async for chunk in self._chunks:
                if not chunk:
                    continue
                self._seen.append(chunk)
                for fn in self._taps:
                    await fn(chunk)
                yield chunk
        finally:
            self._done = True

    async def text(self) -> str:
        """Read the rest of the stream; return all of its text."""
        async for _ in self:
            pass
        return "".join(self._seen)

    @property
    def seen(self) -> str:
        return "".join(self._seen)


async def from_text(text: str) -> AsyncIterator[str]:
    yield text
