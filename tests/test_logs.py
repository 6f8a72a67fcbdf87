"""Log lines as harkd writes them: JSON, secrets redacted, kept for the console's live log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harkd import logs
from harkd.secrets import REDACTOR


class Odd:
    def __repr__(self) -> str:
        return "<odd>"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    with logs.configured("info", "json", stream):
        yield stream


def test_a_line_is_json_with_secrets_redacted_and_kept_for_the_console(
        out: io.StringIO) -> None:
    log = logs.get_logger("harkd.test")
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
        logs.get_logger("harkd.test").info("looped", value=loop)


def test_an_exception_line_carries_its_traceback_redacted(out: io.StringIO) -> None:
    REDACTOR.add("s3cret-in-a-traceback-7")
    try:
        raise RuntimeError("failed with s3cret-in-a-traceback-7")
    except RuntimeError:
        logs.get_logger("harkd.test").exception("it_failed", step="a")
    line = json.loads(out.getvalue())
    assert (line["event"], line["level"], line["step"]) == ("it_failed", "error", "a")
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: failed with ***")
    assert "exc_info" not in line and line["timestamp"].endswith("Z")


def test_a_console_line_is_time_level_event_then_sorted_fields() -> None:
    stream = io.StringIO()
    with logs.configured("warning", "console", stream):
        log = logs.get_logger("harkd.test")
        log.info("dropped")
        log.warning("pipeline_invalid", state="rejected", error="bad key", n=3)
    (line,) = stream.getvalue().splitlines()
    stamp, rest = line.split(" ", 1)
    assert stamp.endswith("Z") and stamp[10] == "T"
    assert rest.startswith("[warning  ] pipeline_invalid")
    assert rest.endswith(" error=bad key n=3 state=rejected")


def test_captured_lines_carry_the_runs_fields_and_the_level_still_filters() -> None:
    with logs.configured("info", "json", io.StringIO()), logs.capture() as lines:
        token = logs.RUN.set(("echo", "r-1", "http"))
        try:
            logs.get_logger("harkd.test").info("step_done", step="t")
            logs.get_logger("harkd.test").debug("not_kept")
            logs.get_logger("harkd.test").info("mine", pipeline="other")
        finally:
            logs.RUN.reset(token)
    assert lines == [
        {"step": "t", "event": "step_done", "pipeline": "echo", "run_id": "r-1",
         "trigger": "http", "log_level": "info"},
        {"pipeline": "other", "event": "mine", "run_id": "r-1", "trigger": "http",
         "log_level": "info"},
    ]


def test_a_process_without_standard_streams_logs_nowhere_and_goes_on() -> None:
    code = ("import sys\nsys.stdout = sys.stderr = None\nfrom harkd import logs\n"
            "logs.get_logger().info('nowhere', n=1)\nlogs.configure('info', 'auto')\n"
            "logs.get_logger().warning('still_nowhere')\nprint('went on', file=sys.__stdout__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "went on\n", "")
