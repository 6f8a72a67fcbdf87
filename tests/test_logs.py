"""Log lines as harkd writes them: JSON, secrets redacted, kept for the console's live log."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from harkd import logs
from harkd.secrets import REDACTOR


class Odd:
    def __repr__(self) -> str:
        return "<odd>"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    saved = structlog.get_config()
    logs.configure("info", "json", stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved)
        logs.LEVEL = logs.LEVELS["debug"]


def test_a_line_is_json_with_secrets_redacted_and_kept_for_the_console(
        out: io.StringIO) -> None:
    log = structlog.get_logger("harkd.test")
    log.debug("not_written")
    log.info("plain", n=1, ratio=0.5, none=None, ok=True, items=[1, "a"], odd=Odd(),
             text="caf\u00e9")
    REDACTOR.add("s3cret-log-value-42")
    log.warning("with_secret", detail="the key is s3cret-log-value-42", n=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "plain" and first["level"] == "info"
    assert (first["n"], first["ratio"], first["none"], first["ok"]) == (1, 0.5, None, True)
    assert first["items"] == [1, "a"] and first["odd"] == "<odd>"
    assert first["text"] == "caf\u00e9" and "\\u00e9" in lines[0]  # ASCII on the wire
    assert lines[0].startswith('{"n": 1, "ratio": 0.5')  # json.dumps' separators
    assert second["detail"] == "the key is ***" and "s3cret" not in out.getvalue()
    kept = [line for line in logs.TAIL.lines if line["event"] in ("plain", "with_secret")]
    assert kept[-2]["odd"] == "<odd>" and kept[-1]["detail"] == "the key is ***"


def test_a_value_that_refers_to_itself_is_refused_as_json_dumps_refuses_it(
        out: io.StringIO) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        structlog.get_logger("harkd.test").info("looped", value=loop)
