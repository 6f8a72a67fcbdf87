"""The shipped pipelines are valid, carry the schema modeline, and work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harkd.auth import sign
from harkd.check import check
from harkd.testing import run_daemon

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schemas/pipeline.schema.json"


def test_every_example_is_valid_and_has_the_modeline() -> None:
    report = check([REPO / "pipelines"])
    assert report.ok, [str(e) for e in report.errors]
    for path in PIPELINES:
        assert path.read_text().splitlines()[0] == MODELINE, path.name


@pytest.mark.anyio
async def test_webhook_examples_answer(tmp_path: Path) -> None:
    names = ["echo", "shout", "greet", "fanout", "signed"]
    files = {n: (REPO / "pipelines" / f"{n}.yaml").read_text() for n in names}
    async with run_daemon(tmp_path, files) as d:
        async with d.http.post(d.url("/hooks/echo"), json={"name": "Ada"}) as r:
            assert await r.text() == "Hello, Ada!"
        async with d.http.post(d.url("/hooks/greet"), json={"name": "Bo", "loud": True}) as r:
            assert await r.text() == "HELLO, BO! (via greet)"
        async with d.http.post(d.url("/hooks/greet"), json={"name": "Bo"}) as r:
            assert await r.text() == "Hello, Bo! (via greet)"
        async with d.http.post(d.url("/hooks/fanout"), json={"name": "Cy"}) as r:
            assert await r.json() == {"greeting": "Hello, Cy!", "shouted": "CY"}
        body = b'{"action": "opened", "repository": {"full_name": "o/r"}}'
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "issues",
                   "X-Hub-Signature-256": sign("change-me", body)}
        async with d.http.post(d.url("/hooks/github"), data=body, headers=headers) as r:
            assert await r.json() == {"summary": "issues opened", "repo": "o/r"}
        headers["X-Hub-Signature-256"] = sign("wrong", body)
        async with d.http.post(d.url("/hooks/github"), data=body, headers=headers) as r:
            assert r.status == 401


def test_examples_folder_is_copyable(tmp_path: Path) -> None:
    shutil.copytree(REPO / "pipelines", tmp_path / "p")
    assert check([tmp_path / "p"]).ok
